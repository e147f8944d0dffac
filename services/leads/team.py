"""The sales team's set-up and figures: capacities, assignment rules, quotas, the commission
plan, the money each rep's clients paid (from billing's events), and ``GET /team/performance``.

Each rep's figures over a period (what a sales manager reads before a pay talk):

- leads owned (captured in the period and owned by the rep now), the median first-touch time
  in business hours, the qualification rate (qualified of owned) and the win rate (won of the
  rep's deals decided in the period);
- won value (deals the rep proposed, signed in the period), deposits cleared and the first-year
  revenue of the rep's clients (money paid in the period within a year of the client's first
  won deal), each per currency;
- quota (the months of the period) and attainment (won value in the quota's currency over it);
- commission: the plan applied, month by month, to the deposits and first-year invoices paid.

A client belongs to the rep who proposed their first won deal.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from services.leads import sales
from services.leads.context import Context
from services.leads.domain.assignment import OWNER_ROLES, AssignmentRules, rule_problems
from services.leads.domain.commission import CommissionPlan, Month, Paid, Quota, attainment, commission
from services.leads.store import ClientPayment, Deal, Lead, SalesDocument, SalesRep
from services.leads.store import Quota as QuotaRow
from shared import events as ev
from shared.db import AccessPerson, ensure_row
from shared.errors import Invalid, NotFound, Problems
from shared.uow import UnitOfWork
from shared.zones import zone

DEPOSITS = uuid.UUID("1d6f0c43-0c0e-4d55-b7a4-4a4e3f3b8a21")  # namespace of deposit rows' ids


# --------------------------------------------------------------------------- set-up


async def set_capacity(tx: UnitOfWork, person_id: uuid.UUID, capacity: int) -> SalesRep:
    """How many leads a rep takes relative to the others (0: none for now)."""
    person = await tx.session.get(AccessPerson, person_id)
    if person is None or person.kind != "person":
        raise NotFound(f"no person {person_id}")
    if person.role not in OWNER_ROLES:
        raise Invalid(f"person_id: {person.email} has role {person.role}; capacity is for sales, success or admin")
    row = await tx.session.get(SalesRep, person_id)
    if row is None:
        row = SalesRep(person_id=person_id, capacity=capacity, updated_at=tx.now())
        tx.session.add(row)
    else:
        row.capacity, row.updated_at = capacity, tx.now()
    sales.forget_team(tx)
    return row


async def put_rules(tx: UnitOfWork, ctx: Context, rules: AssignmentRules) -> AssignmentRules:
    """Replace the rule book; one naming someone unknown, disabled or not in sales, or a rule
    that could give a lead to nobody, is refused with every problem named."""
    problems = rule_problems(rules, await sales.team(tx) | await _all_people_as_reps(tx))
    if problems:
        raise Problems([(f"body.{where}", message) for where, message in problems])
    tx.session.add(SalesDocument(kind="assignment_rules", document=rules.model_dump(mode="json"), created_at=tx.now()))
    sales.forget_team(tx)
    # Read afresh by the transactions after this one (now too: none keeps the old book meanwhile).
    ctx.rules.forget()
    tx.after_commit(ctx.rules.forget)
    return rules


async def _all_people_as_reps(tx: UnitOfWork) -> dict[uuid.UUID, sales.Rep]:
    """Everyone in the registry (a viewer too), so a rule naming one is refused by name."""
    people = await tx.session.scalars(select(AccessPerson).where(AccessPerson.kind == "person"))
    return {
        p.id: sales.Rep(p.id, p.role, p.active, tuple(p.languages or ()), 1)
        for p in people
        if p.role not in OWNER_ROLES
    }


async def plan_in_force(tx: UnitOfWork) -> CommissionPlan | None:
    row = await tx.session.scalar(
        select(SalesDocument).where(SalesDocument.kind == "commission_plan").order_by(SalesDocument.id.desc()).limit(1)
    )
    return None if row is None else CommissionPlan.model_validate(row.document)


async def put_plan(tx: UnitOfWork, ctx: Context, plan: CommissionPlan) -> CommissionPlan:
    if plan.currency not in ctx.settings.currencies:
        raise Invalid(f"currency: the agency sells in {', '.join(ctx.settings.currencies)}, not {plan.currency}")
    tx.session.add(SalesDocument(kind="commission_plan", document=plan.model_dump(mode="json"), created_at=tx.now()))
    return plan


async def put_quotas(tx: UnitOfWork, ctx: Context, quotas: list[Quota]) -> list[Quota]:
    """Set (or replace) quotas, each a rep's target for one month; all or nothing."""
    problems: list[tuple[str, str]] = []
    for n, quota in enumerate(quotas):
        person = await tx.session.get(AccessPerson, quota.person_id)
        if person is None or person.kind != "person":
            problems.append((f"body.quotas[{n}].person_id", f"no person {quota.person_id}"))
        elif person.role not in ("sales", "admin"):
            problems.append((f"body.quotas[{n}].person_id", f"{person.email} has role {person.role}, not sales"))
        if quota.currency not in ctx.settings.currencies:
            problems.append((f"body.quotas[{n}].currency", f"the agency sells in {', '.join(ctx.settings.currencies)}"))
    if problems:
        raise Problems(problems)
    for quota in quotas:
        row = await tx.session.get(QuotaRow, (quota.person_id, quota.month))
        if row is None:
            tx.session.add(
                QuotaRow(person_id=quota.person_id, month=quota.month, amount=quota.amount, currency=quota.currency)
            )
        else:
            row.amount, row.currency = quota.amount, quota.currency
    return quotas


# --------------------------------------------------------------------------- money paid


async def deposit_cleared(tx: UnitOfWork, event: ev.Envelope, data: ev.DepositCleared) -> None:
    """A client's deposit arrived: it counts for the rep who won the deal."""
    if event.lead_id is None:
        return
    await _insert_payment(
        tx,
        {
            "id": uuid.uuid5(DEPOSITS, str(data.invoice_id)),
            "lead_id": event.lead_id,
            "invoice_id": data.invoice_id,
            "kind": "deposit",
            "amount": data.amount,
            "currency": data.currency,
            "paid_at": data.cleared_at,
        },
    )


async def payment_succeeded(tx: UnitOfWork, event: ev.Envelope, data: ev.PaymentSucceeded) -> None:
    """A client paid an invoice. A deposit invoice's payments are left out: the deposit counts
    once it cleared (``deposit.cleared``), not piece by piece."""
    if event.lead_id is None or data.invoice_kind == "deposit":
        return
    await _insert_payment(
        tx,
        {
            "id": data.payment_id,
            "lead_id": event.lead_id,
            "invoice_id": data.invoice_id,
            "kind": "invoice",
            "amount": data.amount,
            "currency": data.currency,
            "paid_at": data.paid_at,
        },
    )


async def _insert_payment(tx: UnitOfWork, values: dict[str, object]) -> None:
    """The payment's row unless it is there already. Without the autoflush before it: client
    payments have no foreign key and are never ORM objects, so nothing pending bears on this
    INSERT, and the flush it forced was one per payment event, each writing that event's rows
    alone (measured: a flush per deposit.cleared was a third of a consumed batch's flushes)."""
    with tx.session.no_autoflush:
        # The table, not the class: the ORM's bulk INSERT around one row cost 1.6 ms a payment.
        await ensure_row(tx.session, ClientPayment.__table__, values)


# --------------------------------------------------------------------------- figures


@dataclass
class RepFigures:
    person_id: uuid.UUID
    name: str
    email: str
    role: str
    active: bool
    leads_owned: int = 0
    first_touch_hours: list[float] = field(default_factory=list)
    qualified: int = 0
    deals_won: int = 0
    deals_lost: int = 0
    won_value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    deposits_cleared: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    first_year_revenue: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    quota: Decimal | None = None
    quota_currency: str | None = None
    commission_months: list[Month] = field(default_factory=list)
    commission_currency: str | None = None

    @property
    def first_touch_median_hours(self) -> float | None:
        return round(statistics.median(self.first_touch_hours), 2) if self.first_touch_hours else None

    @property
    def qualification_rate(self) -> float | None:
        return round(self.qualified / self.leads_owned, 4) if self.leads_owned else None

    @property
    def win_rate(self) -> float | None:
        decided = self.deals_won + self.deals_lost
        return round(self.deals_won / decided, 4) if decided else None

    @property
    def attainment(self) -> Decimal | None:
        if self.quota is None or self.quota_currency is None:
            return None
        return attainment(self.won_value.get(self.quota_currency, Decimal(0)), self.quota)

    @property
    def commission(self) -> Decimal | None:
        return sum((m.paid for m in self.commission_months), Decimal(0)) if self.commission_currency else None


@dataclass
class Performance:
    since: datetime
    until: datetime
    reps: list[RepFigures]
    plan: CommissionPlan | None


def months_between(since: datetime, until: datetime) -> list[str]:
    """The calendar months the period touches (``until`` exclusive)."""
    months: list[str] = []
    day = date(since.year, since.month, 1)
    last = (until - timedelta(microseconds=1)).date()
    while day <= last:
        months.append(f"{day.year:04d}-{day.month:02d}")
        day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return months


async def performance(
    tx: UnitOfWork, ctx: Context, *, since: datetime, until: datetime, only: uuid.UUID | None = None
) -> Performance:
    """Each rep's figures over [since, until) (``only``: one person's)."""
    people_query = select(AccessPerson).where(AccessPerson.kind == "person", AccessPerson.role.in_(OWNER_ROLES))
    if only is not None:
        people_query = people_query.where(AccessPerson.id == only)
    people = list(await tx.session.scalars(people_query.order_by(AccessPerson.email)))
    reps = {p.id: RepFigures(p.id, p.name, p.email, p.role, p.active) for p in people}
    hours = ctx.settings.sales.business_hours()

    leads = await tx.session.scalars(
        select(Lead).where(
            Lead.owner_id.in_(reps),
            Lead.created_at >= since,
            Lead.created_at < until,
            Lead.merged_into.is_(None),
        )
    )
    for lead in leads:
        rep = reps[lead.owner_id]  # type: ignore[index]
        rep.leads_owned += 1
        rep.qualified += lead.qualified_at is not None
        if lead.first_touched_at is not None:
            worked = hours.between(lead.created_at, lead.first_touched_at, zone(lead.timezone))
            rep.first_touch_hours.append(worked.total_seconds() / 3600)

    deals = await tx.session.scalars(select(Deal).where(Deal.owner_id.in_(reps), Deal.status.in_(("won", "lost"))))
    for deal in deals:
        rep = reps[deal.owner_id]  # type: ignore[index]
        decided = deal.signed_at if deal.status == "won" else deal.created_at
        if decided is None or not since <= decided < until:
            continue
        if deal.status == "won":
            rep.deals_won += 1
            rep.won_value[deal.currency] += deal.total
        else:
            rep.deals_lost += 1

    plan = await plan_in_force(tx)
    for person_id, payments in (await _paid_by_rep(tx, reps)).items():
        rep = reps[person_id]
        in_period = [p for p in payments if since <= p.paid_at < until]
        for p in in_period:
            if p.kind == "deposit":
                rep.deposits_cleared[p.currency] += p.amount
            if p.paid_at - p.won_at < timedelta(days=365):
                rep.first_year_revenue[p.currency] += p.amount
        if plan is not None:
            rep.commission_currency = plan.currency
            rep.commission_months = commission(plan, in_period)
    if plan is not None:
        for rep in reps.values():
            rep.commission_currency = plan.currency

    months = months_between(since, until)
    quotas = await tx.session.scalars(select(QuotaRow).where(QuotaRow.person_id.in_(reps), QuotaRow.month.in_(months)))
    for quota in quotas:
        rep = reps[quota.person_id]
        if rep.quota_currency not in (None, quota.currency):
            continue  # quotas of one rep in two currencies: the first one's figure stands
        rep.quota = (rep.quota or Decimal(0)) + quota.amount
        rep.quota_currency = quota.currency
    return Performance(since=since, until=until, reps=list(reps.values()), plan=plan)


async def _paid_by_rep(tx: UnitOfWork, reps: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Paid]]:
    """Money each rep's clients paid, with when the client was won (their first won deal)."""
    first_wins: dict[uuid.UUID, tuple[datetime, uuid.UUID]] = {}
    won = await tx.session.execute(
        select(Deal.lead_id, Deal.signed_at, Deal.owner_id)
        .where(Deal.status == "won", Deal.owner_id.is_not(None), Deal.signed_at.is_not(None))
        .order_by(Deal.signed_at)
    )
    wanted = set(reps)
    for lead_id, signed_at, owner_id in won.all():
        if lead_id not in first_wins and signed_at is not None and owner_id is not None:
            first_wins[lead_id] = (signed_at, owner_id)
    clients = {lead_id: won_by for lead_id, won_by in first_wins.items() if won_by[1] in wanted}
    if not clients:
        return {}
    rows = list(await tx.session.scalars(select(ClientPayment).where(ClientPayment.lead_id.in_(clients))))
    deposit_invoices = {r.invoice_id for r in rows if r.kind == "deposit"}
    paid: dict[uuid.UUID, list[Paid]] = defaultdict(list)
    for row in rows:
        if row.kind == "invoice" and row.invoice_id in deposit_invoices:
            continue  # the deposit row stands for it
        won_at, owner = clients[row.lead_id]
        paid[owner].append(
            Paid("deposit" if row.kind == "deposit" else "invoice", row.amount, row.currency, row.paid_at, won_at)
        )
    return paid

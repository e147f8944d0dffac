"""The sales department's HTTP surface on leads (:8001): owners, activities, the team's set-up
(capacities, assignment rules, quotas, the commission plan) and each rep's figures."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from services.leads import sales, team
from services.leads.api import lead_out
from services.leads.context import Context
from services.leads.domain.assignment import AssignmentRules
from services.leads.domain.commission import CommissionPlan, Quota
from services.leads.schemas import LeadOut
from shared.access import policy as P
from shared.access.context import CURRENT_ACTOR, current_person
from shared.access.rules import need
from shared.bounds import Day, Moment
from shared.errors import Invalid
from shared.money import Money
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


class OwnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: uuid.UUID | None = Field(description="a person with role sales, success or admin; null: the pool")


class ActivityBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["call", "meeting", "email", "note"]
    outcome: str | None = Field(default=None, max_length=2000, description="what came of it")
    next_step: str | None = Field(default=None, min_length=1, max_length=500, description="becomes a task")
    due_at: Moment | None = Field(default=None, description="when the next step is due (default: a business day)")


class ActivityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    activity_id: uuid.UUID = Field(validation_alias="id")
    lead_id: uuid.UUID
    kind: str
    outcome: str | None
    next_step: str | None
    due_at: datetime | None
    by_id: uuid.UUID | None
    at: datetime


class CapacityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(ge=0, le=1000, description="leads taken relative to the others; 0: none for now")


class RepOut(BaseModel):
    person_id: uuid.UUID
    role: str
    active: bool
    languages: list[str]
    capacity: int
    open: int = Field(description="open leads (sales, admin) or clients (success) owned")


class QuotasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: list[Quota] = Field(min_length=1, max_length=1000)


class CommissionMonthOut(BaseModel):
    month: str
    deposits: Decimal
    first_year: Decimal
    earned: Decimal
    paid: Decimal = Field(description="after the monthly cap")


class RepFiguresOut(BaseModel):
    person_id: uuid.UUID
    name: str
    email: str
    role: str
    active: bool
    leads_owned: int
    first_touch_median_hours: float | None = Field(description="business hours from capture to the first touch")
    qualification_rate: float | None
    win_rate: float | None
    won_value: list[Money]
    deposits_cleared: list[Money]
    first_year_revenue: list[Money]
    quota: Money | None
    attainment: Decimal | None = Field(description="won value over quota, 1 = met")
    commission: Money | None
    commission_months: list[CommissionMonthOut]


class PerformanceOut(BaseModel):
    from_: date = Field(alias="from")
    to: date
    plan: CommissionPlan | None
    reps: list[RepFiguresOut]

    model_config = ConfigDict(populate_by_name=True)


def _money(amounts: dict[str, Decimal]) -> list[Money]:
    return [Money(amount=amount, currency=currency) for currency, amount in sorted(amounts.items()) if amount]


def figures_out(rep: team.RepFigures) -> RepFiguresOut:
    commission = rep.commission
    return RepFiguresOut(
        person_id=rep.person_id,
        name=rep.name,
        email=rep.email,
        role=rep.role,
        active=rep.active,
        leads_owned=rep.leads_owned,
        first_touch_median_hours=rep.first_touch_median_hours,
        qualification_rate=rep.qualification_rate,
        win_rate=rep.win_rate,
        won_value=_money(rep.won_value),
        deposits_cleared=_money(rep.deposits_cleared),
        first_year_revenue=_money(rep.first_year_revenue),
        quota=Money(amount=rep.quota, currency=rep.quota_currency)
        if rep.quota is not None and rep.quota_currency
        else None,
        attainment=rep.attainment,
        commission=Money(amount=commission, currency=rep.commission_currency)
        if commission is not None and rep.commission_currency
        else None,
        commission_months=[CommissionMonthOut(**vars(m)) for m in rep.commission_months],
    )


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.put("/leads/{lead_id}/owner", dependencies=[need(P.LEADS_ASSIGN)], response_model=LeadOut, tags=["sales"])
    async def put_owner(lead_id: uuid.UUID, body: OwnerIn) -> LeadOut:
        """Give the lead to a person (role sales, success or admin, active), or back to the pool
        (`owner_id` null): `lead.assigned`."""
        async with uow() as tx:
            lead = await sales.set_owner(tx, lead_id, body.owner_id)
            return lead_out(ctx, lead, tx.now())

    @api.post(
        "/leads/{lead_id}/activities",
        dependencies=[need(P.ACTIVITIES_WRITE)],
        status_code=201,
        response_model=ActivityOut,
        tags=["sales"],
    )
    async def log_activity(lead_id: uuid.UUID, body: ActivityBody) -> ActivityOut:
        """Log a call, meeting, e-mail or note with its outcome; the first call, meeting or
        e-mail is the lead's first touch, and a `next_step` becomes a task due at `due_at`."""
        async with uow() as tx:
            activity = await sales.log_sales_activity(
                tx,
                ctx,
                lead_id,
                sales.ActivityIn(kind=body.kind, outcome=body.outcome, next_step=body.next_step, due_at=body.due_at),
                by_id=current_person(),
            )
            return ActivityOut.model_validate(activity)

    @api.get(
        "/leads/{lead_id}/activities",
        dependencies=[need(P.LEADS_READ, person=True)],
        response_model=list[ActivityOut],
        tags=["sales"],
    )
    async def list_activities(lead_id: uuid.UUID) -> list[ActivityOut]:
        """The calls, meetings, e-mails and notes logged on a lead, oldest first."""
        async with uow() as tx:
            return [ActivityOut.model_validate(a) for a in await sales.activities_of(tx, lead_id)]

    @api.get("/assignment/rules", dependencies=[need(P.TEAM_READ)], response_model=AssignmentRules, tags=["team"])
    async def get_rules() -> AssignmentRules:
        """The assignment rule book in force (none set: language, then round-robin by capacity)."""
        async with uow() as tx:
            return await sales.rules_in_force(tx)

    @api.put("/assignment/rules", dependencies=[need(P.TEAM_MANAGE)], response_model=AssignmentRules, tags=["team"])
    async def put_rules(body: AssignmentRules) -> AssignmentRules:
        """Replace the rule book: the first rule whose conditions match a new lead narrows who
        may get it. A rule naming someone unknown, disabled or not in sales is refused."""
        async with uow() as tx:
            return await team.put_rules(tx, ctx, body)

    @api.get("/team/reps", dependencies=[need(P.TEAM_READ)], response_model=list[RepOut], tags=["team"])
    async def list_reps() -> list[RepOut]:
        """Everyone who may own leads or clients, with languages, capacity and what they own."""
        async with uow() as tx:
            reps = (await sales.team(tx)).values()
            return [
                RepOut(
                    person_id=r.person_id,
                    role=r.role,
                    active=r.active,
                    languages=list(r.languages),
                    capacity=r.capacity,
                    open=r.open_leads,
                )
                for r in sorted(reps, key=lambda r: str(r.person_id))
            ]

    @api.put("/team/reps/{person_id}", dependencies=[need(P.TEAM_MANAGE)], response_model=CapacityIn, tags=["team"])
    async def put_capacity(person_id: uuid.UUID, body: CapacityIn) -> CapacityIn:
        """Set how many leads a rep takes relative to the others."""
        async with uow() as tx:
            row = await team.set_capacity(tx, person_id, body.capacity)
            return CapacityIn(capacity=row.capacity)

    @api.put("/team/quotas", dependencies=[need(P.TEAM_MANAGE)], response_model=QuotasIn, tags=["team"])
    async def put_quotas(body: QuotasIn) -> QuotasIn:
        """Set reps' monthly quotas (won value), all or none."""
        async with uow() as tx:
            return QuotasIn(quotas=await team.put_quotas(tx, ctx, body.quotas))

    @api.get(
        "/team/commission-plan", dependencies=[need(P.TEAM_READ)], response_model=CommissionPlan | None, tags=["team"]
    )
    async def get_plan() -> CommissionPlan | None:
        """The commission plan in force (null: none set)."""
        async with uow() as tx:
            return await team.plan_in_force(tx)

    @api.put("/team/commission-plan", dependencies=[need(P.TEAM_MANAGE)], response_model=CommissionPlan, tags=["team"])
    async def put_plan(body: CommissionPlan) -> CommissionPlan:
        """Replace the commission plan: shares of cleared deposits and of the first year's paid
        invoices (together at most 100%), with an optional monthly cap."""
        async with uow() as tx:
            return await team.put_plan(tx, ctx, body)

    @api.get("/team/performance", dependencies=[need(P.TEAM_READ)], response_model=PerformanceOut, tags=["team"])
    async def performance(
        from_: Annotated[
            Day | None, Query(alias="from", description="first day (default: the first of this month)")
        ] = None,
        to: Annotated[Day | None, Query(description="day after the last (default: today + 1)")] = None,
    ) -> PerformanceOut:
        """Each rep's figures over the period: leads owned, median first-touch time, qualification
        and win rates, won value, deposits cleared, first-year revenue, quota, attainment and
        commission. An admin or finance sees everyone; anyone else sees themselves."""
        actor = CURRENT_ACTOR.get()
        only = None
        if actor is None or actor.role not in ("admin", "finance"):
            only = current_person()
            if only is None:
                raise Invalid("a person's token is needed to read one's own figures")

        async def read(tx: UnitOfWork) -> PerformanceOut:
            today = tx.now().date()
            since = from_ or today.replace(day=1)
            until = to or today + timedelta(days=1)
            if until <= since:
                raise Invalid("to: must be after from")
            result = await team.performance(
                tx,
                ctx,
                since=datetime.combine(since, time(), UTC),
                until=datetime.combine(until, time(), UTC),
                only=only,
            )
            return PerformanceOut(from_=since, to=until, plan=result.plan, reps=[figures_out(r) for r in result.reps])

        return await runtime.reads.run(read)

    return api

"""Retention's use cases: one async function per thing that can happen."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from services.retention import domain
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import (
    Cancellation,
    ChannelSpend,
    Client,
    ClientEvent,
    ClientMoney,
    HealthPoint,
    LoyaltyAward,
    MrrMovement,
    Referral,
    Subscription,
    TierReview,
)
from shared import events as ev
from shared.db import StateRow
from shared.errors import Conflict, Invalid, NotFound
from shared.jobs import Jobs
from shared.money import quantize
from shared.privacy import forget_person
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)
REVIEW_PAGE = 200
# Scheduled jobs whose records are isolated (shared.jobs): one that fails is kept aside with
# its reason and backoff, and the rest of the pass goes on.
PRICE_JOB, LOYALTY_JOB, HEALTH_JOB, TIER_JOB = (
    "retention.price_changes", "retention.loyalty", "retention.health", "retention.tiers"
)


@dataclass(frozen=True)
class Context:
    """What every use case needs besides the transaction: the rules' settings and the metrics."""

    settings: Settings
    metrics: RetentionMetrics
    # The scheduled jobs' poison isolation (the composition root hands in one with the
    # service's metrics).
    jobs: Jobs = field(default_factory=Jobs)

    @property
    def health_policy(self) -> domain.HealthPolicy:
        s = self.settings
        return domain.HealthPolicy(
            weights=s.health_weights,
            failure_penalty=s.health_failure_penalty,
            complaint_penalty=s.health_complaint_penalty,
            engagement_placeholder=s.health_engagement_placeholder,
            tenure_full_days=s.health_tenure_full_days,
            scope_penalty=s.health_scope_penalty,
            yellow_from=s.band_yellow_from,
            green_from=s.band_green_from,
        )

    @property
    def tier_policy(self) -> domain.TierPolicy:
        s = self.settings
        return domain.TierPolicy(
            best_min_revenue=s.tier_best_min_revenue,
            fire_late_payments=s.tier_fire_late_payments,
            fire_out_of_scope=s.tier_fire_out_of_scope,
            fire_complaints=s.tier_fire_complaints,
            fire_failures=s.tier_fire_failures,
        )

    @property
    def risk_policy(self) -> domain.RiskPolicy:
        s = self.settings
        return domain.RiskPolicy(
            late_payments=s.risk_late_payments,
            engagement_drop_share=s.risk_engagement_drop_share,
            engagement_min_before=s.risk_engagement_min_before,
            underused_share=s.risk_underused_share,
            price_notice_days=s.risk_price_notice_days,
        )

    @property
    def offer_policy(self) -> domain.OfferPolicy:
        s = self.settings
        return domain.OfferPolicy(
            pause_fee_share=s.pause_fee_share,
            pause_months=s.pause_months,
            discount_percent=s.discount_percent,
            discount_months=s.discount_months,
        )


# --------------------------------------------------------------------------- what a transaction has read

# A batch applies many events to few clients. A client's rows are read once per transaction
# (for a whole batch by ``prefetch``, else on first use) and kept in ``tx.memo``, which lives
# exactly as long as the transaction: nothing another transaction changed is served from it.
# Reading them again per event would cost a query each, and every query first flushes what is
# pending (one UPDATE per change instead of one statement per table at the commit). Whatever
# this module adds to those rows goes into the memo as well, so it stays the whole truth.

ENGAGEMENT_TYPES = ("email.opened", "email.clicked")
# The timeline events the health and churn-risk rules count.
ASSESSED_TYPES = ("payment.succeeded", "feedback.received", *ENGAGEMENT_TYPES)
LATE_PAYMENTS_WINDOW = timedelta(days=90)
CHUNK = 500  # ids per IN (...) list

TimelineEntry = tuple[str, datetime, dict[str, Any]]  # type, at, detail


@dataclass
class _Assessed:
    """A client's timeline events of ``ASSESSED_TYPES`` from ``since`` on (every one when None)."""

    since: datetime | None
    events: list[TimelineEntry]


def _clients(tx: UnitOfWork) -> dict[uuid.UUID, Client | None]:
    """Client rows this transaction holds locked (read FOR UPDATE, or created here); None: none
    existed (a missing row cannot be locked: creating it races on the primary key instead)."""
    return tx.memo.setdefault("retention.clients", {})


def _money(tx: UnitOfWork) -> dict[uuid.UUID, dict[tuple[str, str], ClientMoney]]:
    """Every money row of a client, by (measure, currency)."""
    return tx.memo.setdefault("retention.money", {})


def _payments(tx: UnitOfWork) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The details of every ``payment.succeeded`` on a client's timeline."""
    return tx.memo.setdefault("retention.payments", {})


def _assessed(tx: UnitOfWork) -> dict[uuid.UUID, _Assessed]:
    return tx.memo.setdefault("retention.assessed", {})


def _awards(tx: UnitOfWork) -> dict[uuid.UUID, LoyaltyAward | None]:
    return tx.memo.setdefault("retention.awards", {})


def _chunks(ids: list[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _lookback(ctx: Context) -> timedelta:
    """How far back the health and churn-risk rules count events."""
    return max(2 * timedelta(days=ctx.settings.engagement_window_days), LATE_PAYMENTS_WINDOW)


async def prefetch(
    tx: UnitOfWork,
    ctx: Context,
    *,
    lead_ids: Iterable[uuid.UUID],
    paying: Iterable[uuid.UUID],
    invoice_ids: Iterable[uuid.UUID],
) -> None:
    """Read what a batch's events will, a few queries for the whole batch: the clients (locked,
    in key order, as two instances' batches then lock in the same order), their money rows,
    the timeline the rules count (clients only), the payments of those ``paying`` an invoice
    off, and the loyalty awards of ``invoice_ids``."""
    clients = _clients(tx)
    fresh = sorted(set(lead_ids) - clients.keys())
    for chunk in _chunks(fresh):
        query = select(Client).where(Client.lead_id.in_(chunk)).order_by(Client.lead_id).with_for_update()
        found = {c.lead_id: c for c in await tx.session.scalars(query)}
        for lead_id in chunk:
            clients[lead_id] = found.get(lead_id)
    # A lead without a client row has no other row either (they all refer to it): ``_client``
    # starts its memo empty when it creates the row.
    existing = [i for i in fresh if clients[i] is not None]
    money = _money(tx)
    for lead_id in existing:
        money[lead_id] = {}
    for chunk in _chunks(existing):
        for row in await tx.session.scalars(select(ClientMoney).where(ClientMoney.lead_id.in_(chunk))):
            money[row.lead_id][(row.measure, row.currency)] = row
    payers = sorted(set(paying) & set(existing))
    payments = _payments(tx)
    for lead_id in payers:
        payments[lead_id] = []
    for chunk in _chunks(payers):
        rows = await tx.session.execute(
            select(ClientEvent.lead_id, ClientEvent.detail).where(
                ClientEvent.lead_id.in_(chunk), ClientEvent.type == "payment.succeeded"
            )
        )
        for lead_id, detail in rows:
            payments[lead_id].append(detail)
    since = tx.now() - _lookback(ctx)
    scored = [i for i in existing if clients[i].became_client_at is not None]  # type: ignore[union-attr]
    assessed = _assessed(tx)
    for lead_id in scored:
        assessed[lead_id] = _Assessed(since, [])
    for chunk in _chunks(scored):
        rows = await tx.session.execute(
            select(ClientEvent.lead_id, ClientEvent.type, ClientEvent.at, ClientEvent.detail).where(
                ClientEvent.lead_id.in_(chunk), ClientEvent.type.in_(ASSESSED_TYPES), ClientEvent.at >= since
            )
        )
        for lead_id, event_type, at, detail in rows:
            assessed[lead_id].events.append((event_type, at, detail))
    awards = _awards(tx)
    wanted = sorted(set(invoice_ids) - awards.keys())
    for chunk in _chunks(wanted):
        found_awards = {
            a.invoice_id: a
            for a in await tx.session.scalars(select(LoyaltyAward).where(LoyaltyAward.invoice_id.in_(chunk)))
        }
        for invoice_id in chunk:
            awards[invoice_id] = found_awards.get(invoice_id)


async def _locked_client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client | None:
    """The client row, locked for this transaction (read FOR UPDATE once), or None."""
    clients = _clients(tx)
    if lead_id not in clients:
        clients[lead_id] = await tx.session.get(Client, lead_id, with_for_update=True)
    return clients[lead_id]


async def _money_rows(tx: UnitOfWork, lead_id: uuid.UUID) -> dict[tuple[str, str], ClientMoney]:
    money = _money(tx)
    if lead_id not in money:
        rows = await tx.session.scalars(select(ClientMoney).where(ClientMoney.lead_id == lead_id))
        money[lead_id] = {(row.measure, row.currency): row for row in rows}
    return money[lead_id]


async def _payment_details(tx: UnitOfWork, lead_id: uuid.UUID) -> list[dict[str, Any]]:
    payments = _payments(tx)
    if lead_id not in payments:
        payments[lead_id] = list(
            await tx.session.scalars(
                select(ClientEvent.detail).where(
                    ClientEvent.lead_id == lead_id, ClientEvent.type == "payment.succeeded"
                )
            )
        )
    return payments[lead_id]


async def _assessed_events(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, now: datetime) -> list[TimelineEntry]:
    """The client's events the rules count as of ``now`` (read again only if the memo does not
    reach back far enough: the clock went back)."""
    since = now - _lookback(ctx)
    assessed = _assessed(tx)
    known = assessed.get(lead_id)
    if known is None or (known.since is not None and known.since > since):
        rows = await tx.session.execute(
            select(ClientEvent.type, ClientEvent.at, ClientEvent.detail).where(
                ClientEvent.lead_id == lead_id, ClientEvent.type.in_(ASSESSED_TYPES), ClientEvent.at >= since
            )
        )
        known = assessed[lead_id] = _Assessed(since, [(t, at, detail) for t, at, detail in rows])
    return known.events


async def _award(tx: UnitOfWork, invoice_id: uuid.UUID) -> LoyaltyAward | None:
    awards = _awards(tx)
    if invoice_id not in awards:
        awards[invoice_id] = await tx.session.get(LoyaltyAward, invoice_id)
    return awards[invoice_id]


# --------------------------------------------------------------------------- the client record


async def _client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    """The client row, locked for this transaction; created on the first event about the
    person, whatever its topic (two instances racing to create it make one batch fail on the
    primary key; the consumer retries it and the retry finds the row)."""
    client = await _locked_client(tx, lead_id)
    if client is not None:
        return client
    now = tx.now()
    client = Client(
        lead_id=lead_id,
        health_factors={},
        subscription_status="none",
        mrr=Decimal(0),
        deals_won=0,
        invoices_issued=0,
        payments_on_time=0,
        payments_late=0,
        days_late_total=0,
        payments_failed=0,
        change_requests=0,
        out_of_scope_requests=0,
        feedback_count=0,
        complaints=0,
        red_flags=0,
        engagement_seen=False,
        takeover_active=False,
        takeovers=0,
        overdue_invoices=[],
        churn_risk_open=False,
        churn_risk_reasons=[],
        tier_reasons=[],
        loyalty_points=0,
        referrals_made=0,
        referrals_converted=0,
        created_at=now,
        updated_at=now,
    )
    # Inserted at the next flush, before the rows that refer to it: the unit of work writes
    # unrelated mappers in name order, Client before ClientEvent, ClientMoney, LoyaltyAward...;
    # a Cancellation (before it) is only added after a query, which flushed the client.
    tx.session.add(client)
    _clients(tx)[lead_id] = client
    _money(tx)[lead_id] = {}
    _payments(tx)[lead_id] = []
    _assessed(tx)[lead_id] = _Assessed(None, [])
    return client


def _count_events(
    events: list[TimelineEntry],
    types: tuple[str, ...],
    *,
    since: datetime,
    until: datetime | None = None,
    where: dict[str, object] | None = None,
) -> int:
    return sum(
        1
        for event_type, at, detail in events
        if event_type in types
        and at >= since
        and (until is None or at < until)
        and all((detail or {}).get(k) == v for k, v in (where or {}).items())
    )


async def _evidence(tx: UnitOfWork, ctx: Context, client: Client, now: datetime) -> domain.HealthEvidence:
    since = now - timedelta(days=ctx.settings.engagement_window_days)
    events = await _assessed_events(tx, ctx, client.lead_id, now)
    return domain.HealthEvidence(
        payments_on_time=client.payments_on_time,
        payments_late=client.payments_late,
        payments_failed=client.payments_failed,
        complaints=client.complaints,
        feedback_count=client.feedback_count,
        client_since=client.became_client_at,
        engagement_seen=client.engagement_seen or client.unsubscribed_at is not None,
        opens_recent=_count_events(events, ("email.opened",), since=since),
        clicks_recent=_count_events(events, ("email.clicked",), since=since),
        unsubscribed=client.unsubscribed_at is not None,
        last_feedback_score=client.last_feedback_score,
        out_of_scope_requests=client.out_of_scope_requests,
    )


async def _risk_evidence(tx: UnitOfWork, ctx: Context, client: Client, now: datetime) -> domain.RiskEvidence:
    window = timedelta(days=ctx.settings.engagement_window_days)
    events = await _assessed_events(tx, ctx, client.lead_id, now)
    return domain.RiskEvidence(
        late_payments_recent=_count_events(
            events, ("payment.succeeded",), since=now - LATE_PAYMENTS_WINDOW, where={"late": True}
        ),
        overdue_open=len(client.overdue_invoices or []),
        engagement_recent=_count_events(events, ENGAGEMENT_TYPES, since=now - window),
        engagement_before=_count_events(events, ENGAGEMENT_TYPES, since=now - 2 * window, until=now - window),
        unsubscribed_recent=client.unsubscribed_at is not None and client.unsubscribed_at >= now - window,
        complaints_recent=_count_events(events, ("feedback.received",), since=now - window, where={"complaint": True}),
        hours_used=client.hours_used,
        hours_included=client.hours_included,
        price_increase_at=client.price_increase_at,
    )


async def _assess(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> bool:
    """Re-score a client's health; a new band is announced (``client.health_changed``); the
    churn-risk rules are checked too. A prospect has no health yet: it starts when the first
    deposit clears."""
    if client.became_client_at is None:
        return False
    health = domain.assess_health(await _evidence(tx, ctx, client, now), ctx.health_policy, now=now)
    previous_score, previous_band = client.health_score, client.band
    client.health_score = health.score
    client.band = health.band
    client.health_factors = health.factors_dict()
    client.health_assessed_at = now
    if health.score != previous_score:
        tx.session.add(HealthPoint(lead_id=client.lead_id, at=now, score=health.score))
    await _check_churn_risk(tx, ctx, client, now=now)
    if health.band == previous_band:
        return False
    tx.emit(
        "client.health_changed",
        ev.ClientHealthChanged(
            score=health.score,
            band=health.band,  # type: ignore[arg-type]
            previous_score=previous_score,
            factors=health.factors_dict(),
        ),
        lead_id=client.lead_id,
    )
    return True


async def _check_churn_risk(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> None:
    """``churn_risk.raised`` once per episode: when a rule first fires for a client with no open
    episode. The episode closes when no rule fires any more; a later rule opens a new one. A
    client who already left (subscription cancelled) is not at risk any more."""
    reasons: list[str] = []
    if client.subscription_status != "cancelled":
        reasons = domain.churn_risks(await _risk_evidence(tx, ctx, client, now), ctx.risk_policy, now=now)
    if not reasons:
        client.churn_risk_open = False
        client.churn_risk_reasons = []
        return
    client.churn_risk_reasons = reasons
    if client.churn_risk_open:
        return
    client.churn_risk_open = True
    client.churn_risk_raised_at = now
    tx.emit(
        "churn_risk.raised",
        ev.ChurnRiskRaised(reasons=reasons, health_score=client.health_score),
        lead_id=client.lead_id,
    )
    for reason in reasons:
        ctx.metrics.churn_risks.labels(reason).inc()


def _timeline(tx: UnitOfWork, client: Client, event_type: str, *, at: datetime | None = None, **detail: object) -> None:
    """Keep the event behind a change on the client's timeline (ids and counts, no personal data)."""
    cause = tx.cause
    row = ClientEvent(
        lead_id=client.lead_id,
        event_id=cause.event_id if cause else uuid.uuid4(),
        type=event_type,
        at=at or (cause.occurred_at if cause else tx.now()),
        detail={k: (str(v) if isinstance(v, (Decimal, uuid.UUID, datetime)) else v) for k, v in detail.items()},
    )
    tx.session.add(row)
    payments = _payments(tx).get(client.lead_id)
    if event_type == "payment.succeeded" and payments is not None:
        payments.append(row.detail)
    assessed = _assessed(tx).get(client.lead_id)
    if event_type in ASSESSED_TYPES and assessed is not None:
        assessed.events.append((event_type, row.at, row.detail))


async def _changed(tx: UnitOfWork, ctx: Context, client: Client) -> None:
    """Every change to a client: stamp it, re-score it, refresh the gauges after the commit."""
    now = tx.now()
    client.updated_at = now
    await _assess(tx, ctx, client, now=now)
    ctx.metrics.refresh_after_commit(tx)


async def _add_money(tx: UnitOfWork, lead_id: uuid.UUID, *, measure: str, amount: Decimal, currency: str) -> None:
    rows = await _money_rows(tx, lead_id)
    row = rows.get((measure, currency))
    if row is None:
        rows[(measure, currency)] = ClientMoney(lead_id=lead_id, measure=measure, currency=currency, amount=amount)
        tx.session.add(rows[(measure, currency)])
    else:
        row.amount = row.amount + amount


def email_hash(email: str | None) -> str | None:
    """One-way hash of a normalised e-mail address (no address is kept in retention)."""
    if not email or not email.strip():
        return None
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _when(tx: UnitOfWork) -> datetime:
    """When the event being applied happened (business clock); a command's own time otherwise."""
    return tx.cause.occurred_at if tx.cause is not None else tx.now()


async def record_capture(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    channel: str,
    captured_at: datetime,
    duplicate: bool,
    email: str | None = None,
    referred_by: uuid.UUID | None = None,
) -> None:
    """A lead was captured: keep the acquisition channel (for per-channel economics), a hash
    of the address (to refuse referring an existing client) and who referred them.
    A repeat touch of a known person (``duplicate``) says nothing new."""
    if duplicate:
        return
    client = await _client(tx, lead_id)
    if client.captured_at is not None:
        return
    client.channel = channel
    client.captured_at = captured_at
    client.email_hash = email_hash(email)
    if referred_by is not None and referred_by != lead_id:
        client.referred_by = referred_by
        referral = await _referral_of(tx, referred_by, client)
        if referral is not None and referral.status == "made":
            referral.referred_lead_id = lead_id
            referral.status = "captured"
        if client.became_client_at is not None:  # the deposit's topic was read first
            await _credit_referrer(tx, ctx, client)
    await _changed(tx, ctx, client)


async def _referral_of(tx: UnitOfWork, referrer_id: uuid.UUID, client: Client) -> Referral | None:
    found = await tx.session.scalar(select(Referral).where(Referral.referred_lead_id == client.lead_id))
    if found is not None or client.email_hash is None:
        return found
    return await tx.session.scalar(
        select(Referral)
        .where(Referral.referrer_id == referrer_id, Referral.email_hash == client.email_hash)
        .order_by(Referral.created_at)
        .limit(1)
    )


async def record_qualified(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> None:
    """BANT qualification: a funnel stage for conversion rates."""
    client = await _client(tx, lead_id)
    client.qualified_at = client.qualified_at or _when(tx)
    await _changed(tx, ctx, client)


async def record_proposed(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> None:
    """An estimate was sent: a funnel stage."""
    client = await _client(tx, lead_id)
    client.proposed_at = client.proposed_at or _when(tx)
    await _changed(tx, ctx, client)


async def record_deal_won(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    value: Decimal,
    currency: str,
    hourly_rate: Decimal | None = None,
    red_flags: int = 0,
    channel: str | None = None,
) -> None:
    """A signed deal: counted, its value kept per currency, its rate kept to price leaked scope."""
    client = await _client(tx, lead_id)
    client.deals_won += 1
    client.won_at = client.won_at or _when(tx)
    client.proposed_at = client.proposed_at or client.won_at
    client.hourly_rate = hourly_rate or client.hourly_rate
    client.red_flags = max(client.red_flags or 0, red_flags)
    client.channel = client.channel or channel
    await _add_money(tx, lead_id, measure="won", amount=value, currency=currency)
    _timeline(tx, client, "deal.won", value=value, currency=currency)
    await _changed(tx, ctx, client)


async def record_invoice(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    amount: Decimal,
    currency: str,
    kind: str = "deposit",
    hours_used: Decimal | None = None,
    included_hours: Decimal | None = None,
) -> None:
    """An invoice was issued to the client; a subscription invoice may report hours used."""
    client = await _client(tx, lead_id)
    client.invoices_issued += 1
    await _add_money(tx, lead_id, measure="invoiced", amount=amount, currency=currency)
    if hours_used is not None:
        client.hours_used = hours_used
        client.hours_included = included_hours if included_hours is not None else client.hours_included
    _timeline(tx, client, "invoice.issued", kind=kind, amount=amount, currency=currency, hours_used=hours_used)
    await _changed(tx, ctx, client)


async def record_payment(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    amount: Decimal,
    currency: str,
    days_late: int,
    invoice_id: uuid.UUID | None = None,
    invoice_paid: bool = False,
    paid_at: datetime | None = None,
) -> None:
    """Money received: revenue, and whether it came on time (evidence of punctuality). A fully
    paid invoice earns loyalty points once its refund window has passed."""
    client = await _client(tx, lead_id)
    if days_late > 0:
        client.payments_late += 1
        client.days_late_total += days_late
    else:
        client.payments_on_time += 1
    await _add_money(tx, lead_id, measure="revenue", amount=amount, currency=currency)
    _timeline(
        tx, client, "payment.succeeded", amount=amount, currency=currency, late=days_late > 0,
        days_late=days_late, invoice_id=invoice_id,
    )
    if invoice_id is not None and invoice_paid:
        client.overdue_invoices = [i for i in (client.overdue_invoices or []) if i != str(invoice_id)]
        paid = [
            Decimal(d["amount"])
            for d in await _payment_details(tx, lead_id)
            if d.get("invoice_id") == str(invoice_id) and d.get("currency") == currency
        ]
        if await _award(tx, invoice_id) is None:
            award = LoyaltyAward(
                invoice_id=invoice_id,
                lead_id=lead_id,
                amount=sum(paid, Decimal(0)),
                currency=currency,
                due_at=(paid_at or _when(tx)) + timedelta(days=ctx.settings.loyalty_refund_window_days),
                status="pending",
                points=0,
            )
            tx.session.add(award)
            _awards(tx)[invoice_id] = award
    await _changed(tx, ctx, client)


async def record_payment_failure(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, hard: bool = False) -> None:
    """A payment attempt failed (each retry that fails counts: it is friction every time)."""
    client = await _client(tx, lead_id)
    client.payments_failed += 1
    _timeline(tx, client, "payment.failed", hard_decline=hard)
    await _changed(tx, ctx, client)


async def record_overdue(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID, days: int) -> None:
    """An invoice is overdue: a churn-risk signal until it is paid or voided."""
    client = await _client(tx, lead_id)
    if str(invoice_id) not in (client.overdue_invoices or []):
        client.overdue_invoices = [*(client.overdue_invoices or []), str(invoice_id)]
    _timeline(tx, client, "invoice.overdue", invoice_id=invoice_id, days_overdue=days)
    await _changed(tx, ctx, client)


async def record_voided(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID) -> None:
    """A voided invoice is no longer overdue and earns no points."""
    client = await _client(tx, lead_id)
    client.overdue_invoices = [i for i in (client.overdue_invoices or []) if i != str(invoice_id)]
    award = await _award(tx, invoice_id)
    if award is not None and award.status == "pending":
        award.status = "voided"
    _timeline(tx, client, "invoice.voided", invoice_id=invoice_id)
    await _changed(tx, ctx, client)


async def record_hours(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, used: Decimal, included: Decimal | None, overage: Decimal
) -> None:
    """A retainer period closed: hours used against those included (the under-use rule)."""
    client = await _client(tx, lead_id)
    client.hours_used = used
    client.hours_included = included if included is not None else client.hours_included
    _timeline(tx, client, "hours.usage_reported", used=used, included=included, overage=overage)
    await _changed(tx, ctx, client)


async def record_credit_note(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID, refunded: Decimal, currency: str
) -> None:
    """A refund inside the refund window cancels the invoice's loyalty points; refunded money
    is no longer revenue."""
    client = await _client(tx, lead_id)
    if refunded > 0:
        award = await _award(tx, invoice_id)
        if award is not None and award.status == "pending":
            award.status = "voided"
        await _add_money(tx, lead_id, measure="revenue", amount=-refunded, currency=currency)
    _timeline(tx, client, "credit_note.issued", invoice_id=invoice_id, refunded=refunded, currency=currency)
    await _changed(tx, ctx, client)


async def record_dunning(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, to_state: str) -> None:
    client = await _client(tx, lead_id)
    _timeline(tx, client, "dunning.state_changed", to_state=to_state)
    await _changed(tx, ctx, client)


async def become_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, cleared_at: datetime) -> None:
    """The first deposit cleared: the person is a client, in the default tier, with a health
    score from now on; whoever referred them is credited. Later deposits change nothing here;
    their money arrives as ``payment.succeeded`` (counting it here too would count it twice)."""
    client = await _client(tx, lead_id)
    if client.became_client_at is not None:
        return
    client.became_client_at = cleared_at
    _timeline(tx, client, "deposit.cleared", at=cleared_at)
    if client.tier is None:
        client.tier = domain.DEFAULT_TIER
        client.tier_reasons = ["first deposit cleared"]
        client.tier_changed_at = tx.now()
        tx.emit(
            "client.tier_changed",
            ev.ClientTierChanged(from_tier=None, to_tier=domain.DEFAULT_TIER, reasons=["first deposit cleared"]),
            lead_id=lead_id,
        )
    if client.referred_by is not None:
        await _credit_referrer(tx, ctx, client)
    await _changed(tx, ctx, client)


async def _credit_referrer(tx: UnitOfWork, ctx: Context, client: Client) -> None:
    """The referred lead became a client: the referral converts and the referrer earns points."""
    assert client.referred_by is not None
    referrer = await _locked_client(tx, client.referred_by)
    if referrer is None:
        return
    referral = await _referral_of(tx, referrer.lead_id, client)
    if referral is None:  # referred outside retention (typed in at leads): still a referral
        referral = Referral(
            id=uuid.uuid4(), referrer_id=referrer.lead_id, email_hash=client.email_hash, status="made",
            created_at=client.captured_at or tx.now(),
        )
        tx.session.add(referral)
    if referral.status == "converted":
        return
    referral.status = "converted"
    referral.referred_lead_id = client.lead_id
    referral.converted_at = client.became_client_at
    referrer.referrals_converted += 1
    bonus = ctx.settings.referral_bonus_points
    if bonus:
        referrer.loyalty_points += bonus
        tx.emit(
            "loyalty.points_awarded",
            ev.LoyaltyPointsAwarded(points=bonus, reason="referral converted", balance=referrer.loyalty_points),
            lead_id=referrer.lead_id,
        )
        ctx.metrics.loyalty_points.inc(bonus)


async def record_change_request(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    in_scope: bool,
    amount: Decimal = Decimal(0),
    hours: Decimal | None = None,
    currency: str | None = None,
) -> None:
    """The client asked for a change. Out of scope is accepted only as a paid change order:
    an out-of-scope ask with no price slipped through unbilled, and its hours at the deal's
    rate are leaked revenue."""
    client = await _client(tx, lead_id)
    client.change_requests += 1
    leaked = Decimal(0)
    if not in_scope:
        client.out_of_scope_requests += 1
        if amount == 0 and hours and client.hourly_rate:
            leaked = quantize(hours * client.hourly_rate)
    _timeline(
        tx, client, "deal.change_requested", in_scope=in_scope, amount=amount, hours=hours, leaked=leaked,
        currency=currency,
    )
    await _changed(tx, ctx, client)


async def record_feedback(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, score: int | None, complaint: bool, replaces: bool = False
) -> None:
    """A survey answer; complaints are welcome, and counted. A changed answer replaces the
    score without counting another answer."""
    client = await _client(tx, lead_id)
    if not replaces:
        client.feedback_count += 1
    if score is not None:
        client.last_feedback_score = score
    if complaint:
        client.complaints += 1
    _timeline(tx, client, "feedback.received", score=score, complaint=complaint)
    await _changed(tx, ctx, client)


async def record_engagement(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, event_type: str) -> None:
    """Opens, clicks and unsubscribes: the engagement factor and the engagement-drop rule."""
    client = await _client(tx, lead_id)
    client.engagement_seen = True
    if event_type == "lead.unsubscribed":
        client.unsubscribed_at = client.unsubscribed_at or _when(tx)
    _timeline(tx, client, event_type)
    await _changed(tx, ctx, client)


async def record_takeover(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, started: bool) -> None:
    """A human took over (or released) the client: shown on the record, counted."""
    client = await _client(tx, lead_id)
    if started and not client.takeover_active:
        client.takeovers += 1
    client.takeover_active = started
    _timeline(tx, client, "takeover.started" if started else "takeover.ended")
    await _changed(tx, ctx, client)


async def record_spend(
    tx: UnitOfWork, *, event_id: uuid.UUID, channel: str, start: date, end: date, amount: Decimal, currency: str
) -> None:
    """Acquisition spend of a channel over a period (CAC)."""
    if await tx.session.get(ChannelSpend, event_id) is None:
        tx.session.add(
            ChannelSpend(
                event_id=event_id, channel=channel, period_start=start, period_end=end, amount=amount,
                currency=currency,
            )
        )


async def erase_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, requested_at: datetime) -> None:
    """Erasure: counts and amounts stay (anonymous); free text the client wrote and the hash
    of their address go."""
    client = await _client(tx, lead_id)
    if client.erased_at is None:
        client.erased_at = requested_at
    client.email_hash = None
    rows = await tx.session.scalars(select(Cancellation).where(Cancellation.lead_id == lead_id))
    for cancellation in rows:
        cancellation.comment = None
    for referral in await tx.session.scalars(select(Referral).where(Referral.referred_lead_id == lead_id)):
        referral.email_hash = None
    await forget_person(tx, lead_id)
    await _changed(tx, ctx, client)


# --------------------------------------------------------------------------- subscriptions


async def _subscription(tx: UnitOfWork, lead_id: uuid.UUID, subscription_id: uuid.UUID) -> Subscription:
    sub = await tx.session.get(Subscription, subscription_id)
    if sub is None:
        # Its start went astray (dead-lettered, or never sent): keep what this event tells.
        sub = Subscription(id=subscription_id, lead_id=lead_id, status="new", updated_at=tx.now())
        tx.session.add(sub)
    return sub


async def _others_running(tx: UnitOfWork, lead_id: uuid.UUID, subscription_id: uuid.UUID) -> bool:
    found = await tx.session.scalar(
        select(Subscription.id).where(
            Subscription.lead_id == lead_id,
            Subscription.id != subscription_id,
            Subscription.status.in_(("active", "paused")),
        ).limit(1)
    )
    return found is not None


def _move(
    tx: UnitOfWork, sub: Subscription, *, kind: str, amount: Decimal | None, at: datetime, logo: int = 0
) -> None:
    if not sub.currency or (amount is None and not logo):
        return
    tx.session.add(
        MrrMovement(
            lead_id=sub.lead_id, subscription_id=sub.id, at=at, kind=kind, amount=amount or Decimal(0),
            currency=sub.currency, logo=logo,
        )
    )


async def _summarise(tx: UnitOfWork, client: Client) -> None:
    """Fold the client's subscriptions into its status and MRR (in the currency of the latest)."""
    await tx.session.flush()
    subs = list(
        await tx.session.scalars(
            select(Subscription)
            .where(Subscription.lead_id == client.lead_id)
            .order_by(Subscription.started_at.desc().nulls_last(), Subscription.id)
        )
    )
    client.subscription_status = domain.subscription_status(s.status for s in subs)
    if not subs:
        return
    client.subscription_id = subs[0].id
    currency = next((s.currency for s in subs if s.currency), None)
    mrr = domain.mrr_by_currency(domain.SubscriptionView(s.status, s.monthly_fee, s.currency) for s in subs)
    client.mrr_currency = currency
    client.mrr = mrr.get(currency, Decimal(0)) if currency else Decimal(0)


async def start_subscription(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    subscription_id: uuid.UUID,
    deal_id: uuid.UUID,
    monthly_fee: Decimal,
    currency: str,
    started_at: datetime,
    included_hours: Decimal | None = None,
) -> None:
    """A retainer started: the monthly fee counts as MRR (``new`` for a client who had none
    running, ``expansion`` for one who already had a retainer)."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    was = sub.status
    sub.deal_id = deal_id
    sub.status = "active"
    sub.monthly_fee = monthly_fee
    sub.currency = currency
    sub.started_at = started_at
    sub.updated_at = tx.now()
    if included_hours is not None:
        client.hours_included = included_hours
    if was not in ("active", "paused", "cancelled"):
        running = await _others_running(tx, lead_id, subscription_id)
        _move(tx, sub, kind="expansion" if running else "new", amount=monthly_fee, at=started_at, logo=0 if running else 1)
    if client.first_subscribed_at is None:
        client.first_subscribed_at = started_at
    await _summarise(tx, client)
    await _changed(tx, ctx, client)


async def pause_subscription(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    subscription_id: uuid.UUID,
    paused_fee: Decimal,
    currency: str,
    until: datetime | None,
) -> None:
    """A paused subscription is not churn, and not MRR either (a ``pause`` movement)."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    if sub.status == "active":
        _move(tx, sub, kind="pause", amount=sub.monthly_fee, at=_when(tx))
    elif sub.status == "new":  # first we hear of it: a client, paused
        sub.currency = currency
        _move(tx, sub, kind="new", amount=Decimal(0), at=_when(tx), logo=0 if await _others_running(tx, lead_id, subscription_id) else 1)
    sub.status = "paused"
    sub.paused_fee = paused_fee
    sub.currency = sub.currency or currency
    sub.paused_at = tx.now()
    sub.paused_until = until
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    await _changed(tx, ctx, client)


async def resume_subscription(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, subscription_id: uuid.UUID
) -> None:
    """Back to active: the monthly fee is MRR again (a ``resume`` movement)."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    if sub.status == "paused":
        _move(tx, sub, kind="resume", amount=sub.monthly_fee, at=_when(tx))
    sub.status = "active"
    sub.paused_until = None
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    await _changed(tx, ctx, client)


async def cancel_subscription(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    subscription_id: uuid.UUID,
    reason: str | None,
    effective_at: datetime,
    monthly_fee: Decimal | None,
    currency: str | None,
) -> None:
    """The subscription ended: no MRR. The client's last running one ending is logo churn
    (a ``churn`` movement of the MRR it still brought, nothing if it was paused); one of
    several ending is ``contraction``."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    was = sub.status
    if sub.monthly_fee is None:
        sub.monthly_fee = monthly_fee
    sub.currency = sub.currency or currency
    if was in ("active", "paused", "new"):
        lost = sub.monthly_fee if was == "active" else Decimal(0)
        # A price change dated after the end never happens.
        for later in await tx.session.scalars(
            select(MrrMovement).where(MrrMovement.subscription_id == sub.id, MrrMovement.at > effective_at)
        ):
            await tx.session.delete(later)
        if was == "new":
            _move(tx, sub, kind="new", amount=Decimal(0), at=effective_at, logo=1)
        if await _others_running(tx, lead_id, subscription_id):
            _move(tx, sub, kind="contraction", amount=lost, at=effective_at)
        else:
            _move(tx, sub, kind="churn", amount=lost, at=effective_at, logo=-1)
            await _ended_without_the_flow(tx, sub, reason=reason, effective_at=effective_at)
    sub.status = "cancelled"
    sub.cancelled_at = effective_at
    sub.cancel_reason = reason
    sub.pending_fee = sub.pending_at = None
    sub.updated_at = tx.now()
    if client.first_subscribed_at is None:
        client.first_subscribed_at = sub.started_at or effective_at
    await _summarise(tx, client)
    await _changed(tx, ctx, client)


async def _ended_without_the_flow(
    tx: UnitOfWork, sub: Subscription, *, reason: str | None, effective_at: datetime
) -> None:
    """The client's last subscription ended without a cancellation the client completed here
    (billing's dunning gave up on an unpaid invoice): the client is gone all the same, so it
    is recorded and announced as a completed cancellation (``cancellation.completed``), which
    moves the lead to `churned` like any other leaver; billing has nothing left to end. Its id
    derives from the subscription, so a replay rebuilds the same record."""
    started = sub.started_at or effective_at
    completed = await tx.session.scalar(
        select(Cancellation.id)
        .where(
            Cancellation.lead_id == sub.lead_id,
            Cancellation.status == "completed",
            (Cancellation.subscription_id == sub.id)
            | (Cancellation.subscription_id.is_(None) & (Cancellation.decided_at >= started)),
        )
        .limit(1)
    )
    if completed is not None:
        return
    why = (reason or "ended")[:40]
    cancellation_id = uuid.uuid5(sub.id, "ended-without-the-flow")
    if await tx.session.get(Cancellation, cancellation_id) is None:
        tx.session.add(
            Cancellation(
                id=cancellation_id, lead_id=sub.lead_id, subscription_id=sub.id, reason=why, comment=None,
                offer=ev.SaveOffer(kind="none", description="ended by billing").model_dump(mode="json"),
                status="completed", created_at=effective_at, decided_at=effective_at,
            )
        )
    tx.emit(
        "cancellation.completed",
        ev.CancellationCompleted(cancellation_id=cancellation_id, subscription_id=sub.id, reason=why, effective_at=effective_at),
        lead_id=sub.lead_id,
    )


async def schedule_price_change(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    subscription_id: uuid.UUID | None,
    new_price: Decimal | None,
    percent: Decimal | None,
    effective_at: datetime,
) -> None:
    """A price change announced ahead: an ``expansion`` or ``contraction`` dated when it takes
    effect (the fee itself changes then), and an increase ahead is a churn-risk signal."""
    client = await _client(tx, lead_id)
    query = select(Subscription).where(Subscription.lead_id == lead_id, Subscription.status.in_(("active", "paused")))
    if subscription_id is not None:
        query = query.where(Subscription.id == subscription_id)
    increase = False
    for sub in await tx.session.scalars(query):
        if sub.monthly_fee is None:
            continue
        new = new_price if new_price is not None else (
            quantize(sub.monthly_fee * (1 + (percent or Decimal(0)) / 100))
        )
        diff = new - sub.monthly_fee
        if diff == 0:
            continue
        increase = increase or diff > 0
        sub.pending_fee, sub.pending_at = new, effective_at
        if sub.status == "active":
            _move(tx, sub, kind="expansion" if diff > 0 else "contraction", amount=abs(diff), at=effective_at)
    if increase:
        client.price_increase_at = effective_at
    _timeline(tx, client, "price.change_scheduled", effective_at=effective_at, increase=increase)
    await _changed(tx, ctx, client)


async def apply_due_price_changes(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: fees whose change took effect become the subscription's fee (and MRR), a page
    of subscriptions a transaction; one that fails is kept aside (job ``retention.price_changes``)."""
    due_now = (Subscription.pending_at.is_not(None), Subscription.pending_at <= now)
    async with uow() as tx:
        due = list(await tx.session.scalars(select(Subscription.id).where(*due_now)))

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Subscription]:
        return {s.id: s for s in await tx.session.scalars(select(Subscription).where(Subscription.id.in_(ids), *due_now))}

    async def apply(tx: UnitOfWork, sub: Subscription) -> None:
        sub.monthly_fee, sub.pending_fee, sub.pending_at = sub.pending_fee, None, None
        client = await tx.session.get(Client, sub.lead_id)
        if client is not None:
            await _summarise(tx, client)

    done = await ctx.jobs(PRICE_JOB).run(uow, due, apply, now=now, load=load, chunk=REVIEW_PAGE)
    return len(done.done)


# --------------------------------------------------------------------------- reading clients


FACTOR_EVENTS: dict[str, tuple[str, ...]] = {
    "punctuality": ("payment.succeeded", "invoice.overdue"),
    "failures": ("payment.failed", "dunning.state_changed"),
    "complaints": ("feedback.received",),
    "engagement": ("email.opened", "email.clicked", "lead.unsubscribed", "feedback.received"),
    "tenure": ("deposit.cleared",),
    "scope": ("deal.change_requested",),
}
EXPLAIN = {
    "punctuality": "share of payments received by their due date",
    "failures": "100 minus a penalty per failed payment attempt",
    "complaints": "100 minus a penalty per complaint",
    "engagement": "opens and clicks in the recent window, survey score, unsubscribes (neutral with no signal)",
    "tenure": "days as a client over the days for full marks",
    "scope": "100 minus a penalty per out-of-scope request",
}


@dataclass(frozen=True)
class ClientView:
    client: Client
    revenue: dict[str, Decimal]
    events: dict[str, list[ClientEvent]]
    trend: dict[str, object]


async def get_client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    client = await tx.session.get(Client, lead_id)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    return client


async def client_view(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> ClientView:
    """The client with the events behind each factor (the latest 20 each) and the trend."""
    client = await get_client(tx, lead_id)
    events: dict[str, list[ClientEvent]] = {}
    for factor, types in FACTOR_EVENTS.items():
        events[factor] = list(
            await tx.session.scalars(
                select(ClientEvent)
                .where(ClientEvent.lead_id == lead_id, ClientEvent.type.in_(types))
                .order_by(ClientEvent.at.desc(), ClientEvent.id.desc())
                .limit(20)
            )
        )
    since = tx.now() - timedelta(days=ctx.settings.trend_days)
    past = await tx.session.scalar(
        select(HealthPoint.score)
        .where(HealthPoint.lead_id == lead_id, HealthPoint.at <= since)
        .order_by(HealthPoint.at.desc(), HealthPoint.id.desc())
        .limit(1)
    )
    if past is None:
        past = await tx.session.scalar(
            select(HealthPoint.score).where(HealthPoint.lead_id == lead_id).order_by(HealthPoint.at, HealthPoint.id).limit(1)
        )
    return ClientView(client, await revenue_of(tx, lead_id), events, domain.trend(client.health_score, past))


async def revenue_of(tx: UnitOfWork, lead_id: uuid.UUID) -> dict[str, Decimal]:
    rows = await tx.session.execute(
        select(ClientMoney.currency, ClientMoney.amount).where(
            ClientMoney.lead_id == lead_id, ClientMoney.measure == "revenue"
        )
    )
    return domain.add_money({}, rows.all())


async def list_clients(
    tx: UnitOfWork, *, tier: str | None, band: str | None, limit: int, offset: int
) -> tuple[list[Client], int]:
    """Clients (prospects are not listed), oldest first, with the total for paging."""
    query = select(Client).where(Client.became_client_at.is_not(None))
    if tier:
        query = query.where(Client.tier == tier)
    if band:
        query = query.where(Client.band == band)
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(
        query.order_by(Client.became_client_at, Client.lead_id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def _client_ids(uow: UnitOfWorkFactory) -> list[uuid.UUID]:
    """Every client's id (prospects have no health or tier), in key order."""
    async with uow() as tx:
        query = select(Client.lead_id).where(Client.became_client_at.is_not(None)).order_by(Client.lead_id)
        return list(await tx.session.scalars(query))


async def _lock_clients(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Client]:
    """A page of clients, locked in key order and remembered for the transaction. A row a
    consumer holds is skipped: that consumer re-scores it anyway."""
    query = (
        select(Client)
        .where(Client.lead_id.in_(ids), Client.became_client_at.is_not(None))
        .order_by(Client.lead_id)
        .with_for_update(skip_locked=True)
    )
    found = {c.lead_id: c for c in await tx.session.scalars(query)}
    _clients(tx).update(found)
    return found


async def review_health(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: fees whose change took effect, loyalty points whose refund window passed,
    and every client's health and churn risk again (tenure and windows move with time, not
    with events), a page of clients a transaction. A client the review fails on is kept aside
    with its reason and backoff (job ``retention.health``); the others are reviewed. Returns
    how many clients changed band."""
    await apply_due_price_changes(uow, ctx, now)
    await award_due_points(uow, ctx, now)

    async def assess(tx: UnitOfWork, client: Client) -> bool:
        return await _assess(tx, ctx, client, now=now)

    ids = await _client_ids(uow)
    result = await ctx.jobs(HEALTH_JOB).run(uow, ids, assess, now=now, load=_lock_clients, chunk=REVIEW_PAGE)
    await ctx.metrics.refresh()
    return sum(result.done.values())


async def award_due_points(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Points for paid invoices whose refund window has passed (``loyalty.points_awarded``), a
    page a transaction; one that fails is kept aside (job ``retention.loyalty``)."""
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(LoyaltyAward.invoice_id)
                .where(LoyaltyAward.status == "pending", LoyaltyAward.due_at <= now)
                .order_by(LoyaltyAward.due_at)
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, LoyaltyAward]:
        query = (
            select(LoyaltyAward)
            .where(LoyaltyAward.invoice_id.in_(ids), LoyaltyAward.status == "pending")
            .with_for_update(skip_locked=True)
        )
        return {a.invoice_id: a for a in await tx.session.scalars(query)}

    async def award(tx: UnitOfWork, award: LoyaltyAward) -> None:
        client = await _locked_client(tx, award.lead_id)
        award.points = domain.loyalty_points(award.amount, ctx.settings.loyalty_points_per_unit)
        award.status = "awarded"
        award.awarded_at = now
        if client is None or award.points == 0:
            return
        client.loyalty_points += award.points
        tx.emit(
            "loyalty.points_awarded",
            ev.LoyaltyPointsAwarded(
                points=award.points, reason="invoice paid", balance=client.loyalty_points, invoice_id=award.invoice_id
            ),
            lead_id=client.lead_id,
        )
        points = award.points  # counted once committed: a chunk that fails is tried again alone
        tx.after_commit(lambda: ctx.metrics.loyalty_points.inc(points))

    done = await ctx.jobs(LOYALTY_JOB).run(uow, due, award, now=now, load=load, chunk=REVIEW_PAGE)
    return len(done.done)


# --------------------------------------------------------------------------- tier review

_REVIEW_STATE = "retention.tier_review.period"


async def _tier_evidence(tx: UnitOfWork, client: Client) -> domain.TierEvidence:
    revenue = await revenue_of(tx, client.lead_id)
    main = max(revenue.values(), default=Decimal(0))
    leaked = sum(
        (
            Decimal(d.get("leaked") or 0)
            for d in await tx.session.scalars(
                select(ClientEvent.detail).where(
                    ClientEvent.lead_id == client.lead_id, ClientEvent.type == "deal.change_requested"
                )
            )
        ),
        Decimal(0),
    )
    return domain.TierEvidence(
        deals_won=client.deals_won,
        has_subscription=client.first_subscribed_at is not None,
        revenue=main,
        payments_on_time=client.payments_on_time,
        payments_late=client.payments_late,
        payments_failed=client.payments_failed,
        complaints=client.complaints,
        out_of_scope_requests=client.out_of_scope_requests,
        leaked=leaked,
        band=client.band,
        red_flags=client.red_flags or 0,
    )


@dataclass(frozen=True)
class _Classified:
    """What the tier review made of one client: its tier, a change and a let-go entry if any."""

    tier: str
    change: dict[str, object] | None
    let_go: dict[str, object] | None


async def _classify(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> _Classified:
    """Classify one client by DESIGN.md's rules; a change is published (``client.tier_changed``)."""
    evidence = await _tier_evidence(tx, client)
    tier, reasons = domain.classify_tier(evidence, ctx.tier_policy)
    change: dict[str, object] | None = None
    if tier != client.tier:
        change = {"lead_id": str(client.lead_id), "from_tier": client.tier, "to_tier": tier, "reasons": reasons}
        tx.emit(
            "client.tier_changed",
            ev.ClientTierChanged(from_tier=client.tier, to_tier=tier, reasons=reasons),  # type: ignore[arg-type]
            lead_id=client.lead_id,
        )
        client.tier, client.tier_changed_at = tier, now
    client.tier_reasons = reasons
    let_go: dict[str, object] | None = None
    if tier == "fire":
        mrr = [{"amount": format(client.mrr, "f"), "currency": client.mrr_currency}] if client.mrr_currency else []
        let_go = {
            "lead_id": str(client.lead_id),
            "reasons": reasons,
            "mrr": mrr,
            "annual_revenue_at_stake": [
                {"amount": format(quantize(client.mrr * 12), "f"), "currency": client.mrr_currency}
            ] if client.mrr_currency else [],
            "revenue_to_date": [
                {"amount": format(a, "f"), "currency": c} for c, a in (await revenue_of(tx, client.lead_id)).items()
            ],
            "subscription_status": client.subscription_status,
        }
    return _Classified(tier, change, let_go)


def _summary(classified: Iterable[_Classified], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """A review's result (tier counts, changes, clients to let go), or ``into`` with more added."""
    counts = dict.fromkeys(domain.TIERS, 0) | dict((into or {}).get("tiers", {}))
    changes = list((into or {}).get("changes", []))
    let_go = list((into or {}).get("let_go", []))
    for c in classified:
        counts[c.tier] = counts.get(c.tier, 0) + 1
        changes += [c.change] if c.change else []
        let_go += [c.let_go] if c.let_go else []
    return {"tiers": counts, "changes": changes, "let_go": let_go}


async def review_tiers(uow: UnitOfWorkFactory, ctx: Context, now: datetime, *, force: bool = False) -> TierReview | None:
    """The tier review: once per period (monthly by default) on the business clock, or now when
    ``force``d. Every client is classified by DESIGN.md's rules; a change is published
    (``client.tier_changed``); the review lists the clients to let go (``fire``) with their
    reasons and the revenue at stake.

    A client the review fails on is kept aside with its reason (job ``retention.tiers``); the
    others are reviewed. It is tried again at the following polls once its backoff is over, and
    what it comes to is added to the period's review."""
    period = domain.review_period(now, ctx.settings.tier_review_every)
    async with uow() as tx:
        last = await tx.session.get(StateRow, _REVIEW_STATE, with_for_update=True)
        reviewed = not force and last is not None and last.value == period
        if last is None:
            # A new store starts counting periods: its first review is at the next period's
            # start (clients that have just arrived have nothing to be reviewed on yet).
            tx.session.add(StateRow(name=_REVIEW_STATE, value=period))
            if not force:
                return None
        elif not reviewed:
            last.value = period
    if reviewed:
        await _review_failed_again(uow, ctx, now, period)
        return None

    async def classify(tx: UnitOfWork, client: Client) -> _Classified:
        return await _classify(tx, ctx, client, now=now)

    ids = await _client_ids(uow)
    result = await ctx.jobs(TIER_JOB).run(uow, ids, classify, now=now, load=_lock_clients, chunk=REVIEW_PAGE)
    async with uow() as tx:
        review = TierReview(
            id=uuid.uuid4(),
            period=period,
            at=now,
            result=_summary(result.done[i] for i in ids if i in result.done),
        )
        tx.session.add(review)
    await ctx.metrics.refresh()
    return review


async def _review_failed_again(uow: UnitOfWorkFactory, ctx: Context, now: datetime, period: str) -> None:
    """The clients this period's review failed on, whose backoff is over, reviewed again; what
    they come to joins the period's review."""
    job = ctx.jobs(TIER_JOB)
    async with uow.sessions() as session:
        failing = await job.failures(session)
    due: list[uuid.UUID] = []
    for key, failure in failing.items():
        try:
            due += [] if failure.waits(now) else [uuid.UUID(key)]
        except ValueError:
            continue
    if not due:
        return

    async def classify(tx: UnitOfWork, client: Client) -> _Classified:
        return await _classify(tx, ctx, client, now=now)

    result = await job.run(uow, due, classify, now=now, load=_lock_clients)
    if not result.done:
        return
    async with uow() as tx:
        review = await tx.session.scalar(
            select(TierReview).where(TierReview.period == period).order_by(TierReview.at.desc()).limit(1).with_for_update()
        )
        if review is not None:
            review.result = _summary(result.done.values(), into=review.result)
    await ctx.metrics.refresh()


async def latest_review(tx: UnitOfWork) -> TierReview:
    review = await tx.session.scalar(select(TierReview).order_by(TierReview.at.desc()).limit(1))
    if review is None:
        raise NotFound("no tier review has run yet: it runs monthly, or POST /reviews to run one now")
    return review


# --------------------------------------------------------------------------- referrals


async def make_referral(
    tx: UnitOfWork,
    ctx: Context,
    referrer_id: uuid.UUID,
    *,
    name: str,
    email: str,
    company: str | None,
    note: str | None,
) -> Referral:
    """A client refers someone (``referral.made``; leads creates the lead on channel
    ``referral`` and moves the referrer to ``advocacy``). Refused for someone who already is a
    client, for the referrer themselves, and twice for the same person."""
    referrer = await tx.session.get(Client, referrer_id, with_for_update=True)
    if referrer is None:
        raise NotFound(f"no client {referrer_id}")
    hashed = email_hash(email)
    if hashed is not None and hashed == referrer.email_hash:
        raise Conflict("a client cannot refer themselves")
    existing = await tx.session.scalar(
        select(Client.lead_id).where(Client.email_hash == hashed, Client.became_client_at.is_not(None)).limit(1)
    )
    if existing is not None:
        raise Conflict(f"{email} is already a client: a referral brings someone new")
    again = await tx.session.scalar(
        select(Referral.id).where(Referral.referrer_id == referrer_id, Referral.email_hash == hashed).limit(1)
    )
    if again is not None:
        raise Conflict(f"referral {again} already names this person")
    referral = Referral(id=uuid.uuid4(), referrer_id=referrer_id, email_hash=hashed, status="made", created_at=tx.now())
    tx.session.add(referral)
    referrer.referrals_made += 1
    tx.emit(
        "referral.made",
        ev.ReferralMade(referral_id=referral.id, name=name, email=email, company=company, note=note),
        lead_id=referrer_id,
    )
    ctx.metrics.referrals.labels("made").inc()
    return referral


# --------------------------------------------------------------------------- cancellations


def _offer_payload(offer: domain.Offer) -> ev.SaveOffer:
    return ev.SaveOffer(
        kind=offer.kind,  # type: ignore[arg-type]
        fee=offer.fee,
        discount_percent=offer.discount_percent,
        months=offer.months,
        currency=offer.currency,
        description=offer.description,
    )


async def request_cancellation(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, reason: str, comment: str | None
) -> Cancellation:
    """A client asks to cancel: record it with the save offer its tier and health earn
    (``cancellation.requested``). Only a running (active or paused) subscription can be
    cancelled, and one request at a time."""
    client = await tx.session.get(Client, lead_id, with_for_update=True)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    subscription = await tx.session.scalar(
        select(Subscription)
        .where(Subscription.lead_id == lead_id, Subscription.status.in_(("active", "paused")))
        .order_by(Subscription.started_at.desc().nulls_last(), Subscription.id)
        .limit(1)
    )
    if subscription is None:
        raise Conflict(
            f"client {lead_id} has no active or paused subscription to cancel"
            f" (subscription status: {client.subscription_status})"
        )
    open_request = await tx.session.scalar(
        select(Cancellation.id).where(Cancellation.lead_id == lead_id, Cancellation.status == "requested")
    )
    if open_request is not None:
        raise Conflict(
            f"cancellation {open_request} of client {lead_id} is still open: accept its offer or confirm it"
        )
    offer = domain.choose_offer(
        tier=client.tier,
        band=client.band,
        reason=reason,
        monthly_fee=subscription.monthly_fee,
        currency=subscription.currency,
        policy=ctx.offer_policy,
    )
    payload = _offer_payload(offer)
    cancellation = Cancellation(
        id=uuid.uuid4(),
        lead_id=lead_id,
        subscription_id=subscription.id,
        reason=reason,
        comment=comment,
        offer=payload.model_dump(mode="json"),
        status="requested",
        created_at=tx.now(),
    )
    tx.session.add(cancellation)
    tx.emit(
        "cancellation.requested",
        ev.CancellationRequested(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            reason=reason,
            comment=comment,
            offer=payload,
        ),
        lead_id=lead_id,
    )
    return cancellation


async def get_cancellation(tx: UnitOfWork, cancellation_id: uuid.UUID, *, lock: bool = False) -> Cancellation:
    cancellation = await tx.session.get(Cancellation, cancellation_id, with_for_update=lock)
    if cancellation is None:
        raise NotFound(f"no cancellation {cancellation_id}")
    return cancellation


async def accept_offer(tx: UnitOfWork, cancellation_id: uuid.UUID) -> tuple[Cancellation, bool]:
    """The client takes the save offer (``cancellation.saved``; billing pauses or discounts).
    A repeat answers the same and emits nothing; the bool says whether this call saved it."""
    cancellation = await get_cancellation(tx, cancellation_id, lock=True)
    if cancellation.status == "saved":
        return cancellation, False
    if cancellation.status != "requested":
        raise Conflict(
            f"cancellation {cancellation_id} is {cancellation.status}; only a requested one can be saved"
        )
    if cancellation.offer.get("kind") == "none":
        raise Conflict(f"cancellation {cancellation_id} has no save offer to accept; confirm it instead")
    cancellation.status = "saved"
    cancellation.decided_at = tx.now()
    tx.emit(
        "cancellation.saved",
        ev.CancellationSaved(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            offer=ev.SaveOffer.model_validate(cancellation.offer),
        ),
        lead_id=cancellation.lead_id,
    )
    return cancellation, True


async def confirm_cancellation(tx: UnitOfWork, cancellation_id: uuid.UUID) -> tuple[Cancellation, bool]:
    """The client declines the offer and leaves (``cancellation.completed``, effective now;
    billing ends the subscription). A repeat answers the same and emits nothing."""
    cancellation = await get_cancellation(tx, cancellation_id, lock=True)
    if cancellation.status == "completed":
        return cancellation, False
    if cancellation.status != "requested":
        raise Conflict(
            f"cancellation {cancellation_id} was {cancellation.status} by its offer;"
            " a client who still wants to leave asks for a new cancellation"
        )
    now = tx.now()
    cancellation.status = "completed"
    cancellation.decided_at = now
    tx.emit(
        "cancellation.completed",
        ev.CancellationCompleted(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            reason=cancellation.reason,
            effective_at=now,
        ),
        lead_id=cancellation.lead_id,
    )
    return cancellation, True


# --------------------------------------------------------------------------- economics


def _readable(amount: Decimal | None, what: str) -> bool:
    """Whether a stored amount is a number. NaN (a fee stored before the contract refused it)
    compared in the figures raised InvalidOperation, and one such row broke the economics of
    every client: it is left out and logged instead."""
    if amount is None or amount.is_finite():
        return True
    log.warning("left out of the economics: %s of %s", what, amount)
    return False


def _leaked(detail: object) -> Decimal | None:
    """The leaked revenue a timeline entry records, or None (none, or a value stored before the
    contract bounded it that reads as no number): one odd entry must not break everyone's
    economics, so it is left out and logged; the tier review reports it as that client's failure."""
    if not isinstance(detail, dict) or detail.get("leaked") in (None, "0"):
        return None
    try:
        amount = Decimal(detail["leaked"])
    except (ArithmeticError, TypeError, ValueError):
        amount = Decimal("NaN")
    if not amount.is_finite():
        log.warning("left out of the economics: an unreadable leaked amount %r", str(detail["leaked"])[:80])
        return None
    return amount


async def economics(
    tx: UnitOfWork, ctx: Context, *, start: datetime, end: datetime, channel: str | None, currency: str | None
) -> dict[str, object]:
    """Unit economics of [start, end), optionally of one acquisition channel, money in one
    currency (the reporting currency unless asked). Money is summed in Python: SQLite keeps
    exact decimals as text, where SUM would be a float."""
    if end <= start:
        raise Invalid(f"empty or inverted period: from {start.isoformat()} is not before to {end.isoformat()}")
    cur = (currency or ctx.settings.reporting_currency).upper()
    session = tx.session
    # Columns, not ORM objects: this reads every client, movement and change request, and
    # hydrating them held the GIL long enough to delay the loop's health checks (py-spy --gil).
    query = select(
        Client.lead_id, Client.channel, Client.captured_at, Client.qualified_at, Client.proposed_at,
        Client.won_at, Client.became_client_at, Client.tier,
    )
    if channel:
        query = query.where(Client.channel == channel)
    clients = (await session.execute(query)).all()
    ids = {c.lead_id for c in clients}
    leads = [
        domain.LeadFacts(
            lead_id=c.lead_id, channel=c.channel, captured_at=c.captured_at, qualified_at=c.qualified_at,
            proposed_at=c.proposed_at, won_at=c.won_at, client_at=c.became_client_at, tier=c.tier,
        )
        for c in clients
    ]
    moves = select(
        MrrMovement.lead_id, MrrMovement.at, MrrMovement.kind, MrrMovement.amount, MrrMovement.currency, MrrMovement.logo
    ).order_by(MrrMovement.at, MrrMovement.id)
    movements = [
        domain.Movement(m.lead_id, m.at, m.kind, m.amount, m.currency, m.logo)
        for m in await session.execute(moves)
        if m.lead_id in ids and _readable(m.amount, "an MRR movement")
    ]
    spend_query = select(
        ChannelSpend.channel, ChannelSpend.period_start, ChannelSpend.period_end, ChannelSpend.amount, ChannelSpend.currency
    )
    if channel:
        spend_query = spend_query.where(ChannelSpend.channel == channel)
    spends = [
        domain.Spend(s.channel, s.period_start, s.period_end, s.amount, s.currency)
        for s in await session.execute(spend_query)
        if _readable(s.amount, "a channel's spend")
    ]
    changes = select(ClientEvent.lead_id, ClientEvent.at, ClientEvent.detail).where(ClientEvent.type == "deal.change_requested")
    leaked = [
        (e.at, amount, e.detail.get("currency") or "")
        for e in await session.execute(changes)
        if e.lead_id in ids and (amount := _leaked(e.detail)) is not None
    ]
    ended = select(Cancellation.lead_id, Cancellation.decided_at, Cancellation.reason).where(Cancellation.status == "completed")
    exits = [
        (c.decided_at, c.reason)
        for c in await session.execute(ended)
        if c.lead_id in ids and c.decided_at is not None
    ]
    figures = domain.economics(
        domain.EconomicsInput(
            start=start, end=end, currency=cur, gross_margin=ctx.settings.gross_margin, leads=leads,
            movements=movements, spends=spends, leaked=leaked, exits=exits,
        )
    )
    figures.update({"from": start, "to": end, "channel": channel, "currency": cur, "gross_margin": ctx.settings.gross_margin})
    if not clients:
        figures["reasons"]["period"] = (  # type: ignore[index]
            f"no lead or client from channel {channel!r}" if channel else "no lead or client recorded yet"
        )
    return figures


# --------------------------------------------------------------------------- replay of retention's own events


async def replay_tier(tx: UnitOfWork, lead_id: uuid.UUID, *, to_tier: str, reasons: list[str]) -> None:
    """Rebuild: the tier a review gave (its event is the record of it)."""
    client = await _client(tx, lead_id)
    client.tier, client.tier_reasons, client.tier_changed_at = to_tier, reasons, _when(tx)


async def replay_referral(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.ReferralMade) -> None:
    if await tx.session.get(Referral, p.referral_id) is not None:
        return
    referrer = await _client(tx, lead_id)
    hashed = email_hash(p.email)
    # leads may already have captured the referred person (their events can come first)
    referred = await tx.session.scalar(
        select(Client).where(Client.referred_by == lead_id, Client.email_hash == hashed).limit(1)
    ) if hashed else None
    tx.session.add(
        Referral(
            id=p.referral_id, referrer_id=lead_id, email_hash=hashed, status="captured" if referred else "made",
            referred_lead_id=referred.lead_id if referred else None, created_at=_when(tx),
        )
    )
    referrer.referrals_made += 1


async def replay_points(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.LoyaltyPointsAwarded) -> None:
    client = await _client(tx, lead_id)
    if p.invoice_id is not None:
        award = await _award(tx, p.invoice_id)
        if award is not None and award.status == "awarded":
            return
        if award is not None:
            award.status, award.points, award.awarded_at = "awarded", p.points, _when(tx)
    client.loyalty_points = p.balance


async def replay_cancellation(tx: UnitOfWork, lead_id: uuid.UUID, event_type: str, p: ev.Payload) -> None:
    await _client(tx, lead_id)
    cancellation = await tx.session.get(Cancellation, p.cancellation_id)  # type: ignore[attr-defined]
    if event_type == "cancellation.requested":
        assert isinstance(p, ev.CancellationRequested)
        if cancellation is None:
            tx.session.add(
                Cancellation(
                    id=p.cancellation_id, lead_id=lead_id, subscription_id=p.subscription_id, reason=p.reason,
                    comment=p.comment, offer=p.offer.model_dump(mode="json"), status="requested",
                    created_at=_when(tx),
                )
            )
        return
    status = "saved" if event_type == "cancellation.saved" else "completed"
    # A cancellation the replay already rebuilt as decided (one billing ended without the flow:
    # recorded at the subscription's end, announced when it was processed) keeps its moment.
    if cancellation is not None and cancellation.status != status:
        cancellation.status = status
        cancellation.decided_at = _when(tx)


@dataclass(frozen=True)
class Snapshot:
    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: dict[str, Decimal]
    revenue: dict[str, Decimal]
    as_of: datetime


async def snapshot(tx: UnitOfWork) -> Snapshot:
    """Now: clients, subscriptions by status, MRR (paused excluded) and revenue by currency."""
    session = tx.session
    clients = await session.scalar(select(func.count()).where(Client.became_client_at.is_not(None)))
    by_status = dict(
        (await session.execute(select(Subscription.status, func.count()).group_by(Subscription.status))).all()
    )
    active = await session.execute(
        select(Subscription.status, Subscription.monthly_fee, Subscription.currency).where(
            Subscription.status == "active"
        )
    )
    mrr = domain.mrr_by_currency(domain.SubscriptionView(*row) for row in active)
    revenue_rows = await session.execute(
        select(ClientMoney.currency, ClientMoney.amount).where(ClientMoney.measure == "revenue")
    )
    return Snapshot(
        clients=clients or 0,
        active_subscriptions=by_status.get("active", 0),
        paused_subscriptions=by_status.get("paused", 0),
        mrr=mrr,
        revenue=domain.add_money({}, revenue_rows),
        as_of=tx.now(),
    )

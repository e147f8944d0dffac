"""Retention's use cases: one async function per thing that can happen."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from services.retention import domain
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import Cancellation, Client, ClientMoney, Subscription
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.uow import UnitOfWork, UnitOfWorkFactory

REVIEW_PAGE = 200


@dataclass(frozen=True)
class Context:
    """What every use case needs besides the transaction: the rules' settings and the metrics."""

    settings: Settings
    metrics: RetentionMetrics

    @property
    def health_policy(self) -> domain.HealthPolicy:
        s = self.settings
        return domain.HealthPolicy(
            weights=s.health_weights,
            failure_penalty=s.health_failure_penalty,
            complaint_penalty=s.health_complaint_penalty,
            engagement_placeholder=s.health_engagement_placeholder,
            tenure_full_days=s.health_tenure_full_days,
            yellow_from=s.band_yellow_from,
            green_from=s.band_green_from,
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


# --------------------------------------------------------------------------- the client record


async def _client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    """The client row, locked for this transaction; created on the first event about the
    person, whatever its topic (two instances racing to create it make one batch fail on the
    primary key; the consumer retries it and the retry finds the row)."""
    client = await tx.session.get(Client, lead_id, with_for_update=True)
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
        created_at=now,
        updated_at=now,
    )
    tx.session.add(client)
    await tx.session.flush()
    return client


def _evidence(client: Client) -> domain.HealthEvidence:
    return domain.HealthEvidence(
        payments_on_time=client.payments_on_time,
        payments_late=client.payments_late,
        payments_failed=client.payments_failed,
        complaints=client.complaints,
        feedback_count=client.feedback_count,
        client_since=client.became_client_at,
    )


def _assess(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> bool:
    """Re-score a client's health; a new band is announced (``client.health_changed``).
    A prospect has no health yet: it starts when the first deposit clears."""
    if client.became_client_at is None:
        return False
    health = domain.assess_health(_evidence(client), ctx.health_policy, now=now)
    previous_score, previous_band = client.health_score, client.band
    client.health_score = health.score
    client.band = health.band
    client.health_factors = health.factors_dict()
    client.health_assessed_at = now
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


def _changed(tx: UnitOfWork, ctx: Context, client: Client) -> None:
    """Every change to a client: stamp it, re-score it, refresh the gauges after the commit."""
    now = tx.now()
    client.updated_at = now
    _assess(tx, ctx, client, now=now)
    ctx.metrics.refresh_after_commit(tx)


async def _add_money(tx: UnitOfWork, lead_id: uuid.UUID, *, measure: str, amount: Decimal, currency: str) -> None:
    row = await tx.session.get(ClientMoney, (lead_id, measure, currency))
    if row is None:
        tx.session.add(ClientMoney(lead_id=lead_id, measure=measure, currency=currency, amount=amount))
    else:
        row.amount = row.amount + amount


async def record_capture(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, channel: str, captured_at: datetime, duplicate: bool
) -> None:
    """A lead was captured: keep the acquisition channel (for per-channel economics).
    A repeat touch of a known person (``duplicate``) says nothing new."""
    if duplicate:
        return
    client = await _client(tx, lead_id)
    if client.captured_at is not None:
        return
    client.channel = channel
    client.captured_at = captured_at
    _changed(tx, ctx, client)


async def record_deal_won(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, value: Decimal, currency: str
) -> None:
    """A signed deal: counted, and its value kept per currency."""
    client = await _client(tx, lead_id)
    client.deals_won += 1
    await _add_money(tx, lead_id, measure="won", amount=value, currency=currency)
    _changed(tx, ctx, client)


async def record_invoice(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, amount: Decimal, currency: str
) -> None:
    """An invoice was issued to the client."""
    client = await _client(tx, lead_id)
    client.invoices_issued += 1
    await _add_money(tx, lead_id, measure="invoiced", amount=amount, currency=currency)
    _changed(tx, ctx, client)


async def record_payment(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, amount: Decimal, currency: str, days_late: int
) -> None:
    """Money received: revenue, and whether it came on time (evidence of punctuality)."""
    client = await _client(tx, lead_id)
    if days_late > 0:
        client.payments_late += 1
        client.days_late_total += days_late
    else:
        client.payments_on_time += 1
    await _add_money(tx, lead_id, measure="revenue", amount=amount, currency=currency)
    _changed(tx, ctx, client)


async def record_payment_failure(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> None:
    """A payment attempt failed (each retry that fails counts: it is friction every time)."""
    client = await _client(tx, lead_id)
    client.payments_failed += 1
    _changed(tx, ctx, client)


async def become_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, cleared_at: datetime) -> None:
    """The first deposit cleared: the person is a client, in the default tier, with a health
    score from now on. Later deposits change nothing here; their money arrives as
    ``payment.succeeded`` (counting it here too would count it twice)."""
    client = await _client(tx, lead_id)
    if client.became_client_at is not None:
        return
    client.became_client_at = cleared_at
    if client.tier is None:
        client.tier = domain.DEFAULT_TIER
        client.tier_changed_at = tx.now()
        tx.emit(
            "client.tier_changed",
            ev.ClientTierChanged(from_tier=None, to_tier=domain.DEFAULT_TIER, reasons=["first deposit cleared"]),
            lead_id=lead_id,
        )
    _changed(tx, ctx, client)


async def record_change_request(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, in_scope: bool) -> None:
    """The client asked for a change; out-of-scope asks are a tier signal later."""
    client = await _client(tx, lead_id)
    client.change_requests += 1
    if not in_scope:
        client.out_of_scope_requests += 1
    _changed(tx, ctx, client)


async def record_feedback(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, score: int | None, complaint: bool
) -> None:
    """A survey answer; complaints are welcome, and counted."""
    client = await _client(tx, lead_id)
    client.feedback_count += 1
    if score is not None:
        client.last_feedback_score = score
    if complaint:
        client.complaints += 1
    _changed(tx, ctx, client)


async def erase_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, requested_at: datetime) -> None:
    """Erasure: counts and amounts stay (anonymous); free text the client wrote goes."""
    client = await _client(tx, lead_id)
    if client.erased_at is None:
        client.erased_at = requested_at
    rows = await tx.session.scalars(select(Cancellation).where(Cancellation.lead_id == lead_id))
    for cancellation in rows:
        cancellation.comment = None
    _changed(tx, ctx, client)


# --------------------------------------------------------------------------- subscriptions


async def _subscription(tx: UnitOfWork, lead_id: uuid.UUID, subscription_id: uuid.UUID) -> Subscription:
    sub = await tx.session.get(Subscription, subscription_id)
    if sub is None:
        # Its start went astray (dead-lettered, or never sent): keep what this event tells.
        sub = Subscription(id=subscription_id, lead_id=lead_id, status="active", updated_at=tx.now())
        tx.session.add(sub)
    return sub


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
) -> None:
    """A retainer started: the monthly fee counts as MRR."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    sub.deal_id = deal_id
    sub.status = "active"
    sub.monthly_fee = monthly_fee
    sub.currency = currency
    sub.started_at = started_at
    sub.updated_at = tx.now()
    if client.first_subscribed_at is None:
        client.first_subscribed_at = started_at
    await _summarise(tx, client)
    _changed(tx, ctx, client)


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
    """A paused subscription is not churn, and not MRR either."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    sub.status = "paused"
    sub.paused_fee = paused_fee
    sub.currency = sub.currency or currency
    sub.paused_at = tx.now()
    sub.paused_until = until
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    _changed(tx, ctx, client)


async def resume_subscription(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, subscription_id: uuid.UUID
) -> None:
    """Back to active: the monthly fee is MRR again."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    sub.status = "active"
    sub.paused_until = None
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    _changed(tx, ctx, client)


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
    """The subscription ended: no MRR; the client counts as lost in logo churn."""
    client = await _client(tx, lead_id)
    sub = await _subscription(tx, lead_id, subscription_id)
    sub.status = "cancelled"
    sub.cancelled_at = effective_at
    sub.cancel_reason = reason
    if sub.monthly_fee is None:
        sub.monthly_fee = monthly_fee
    sub.currency = sub.currency or currency
    sub.updated_at = tx.now()
    if client.first_subscribed_at is None:
        client.first_subscribed_at = sub.started_at or effective_at
    await _summarise(tx, client)
    _changed(tx, ctx, client)


# --------------------------------------------------------------------------- reading clients


async def get_client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    client = await tx.session.get(Client, lead_id)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    return client


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


async def review_health(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Re-assess every client's health on a schedule: tenure grows with time, not with
    events. One transaction per page, so a long review never holds every row. Returns how
    many clients changed band."""
    changed = 0
    after: uuid.UUID | None = None
    while True:
        async with uow() as tx:
            query = select(Client).where(Client.became_client_at.is_not(None))
            if after is not None:
                query = query.where(Client.lead_id > after)
            # A row a consumer holds is skipped: that consumer re-scores it anyway.
            page = list(
                await tx.session.scalars(
                    query.order_by(Client.lead_id).limit(REVIEW_PAGE).with_for_update(skip_locked=True)
                )
            )
            for client in page:
                changed += int(_assess(tx, ctx, client, now=now))
        if len(page) < REVIEW_PAGE:
            break
        after = page[-1].lead_id
    await ctx.metrics.refresh()
    return changed


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


@dataclass(frozen=True)
class Economics:
    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: dict[str, Decimal]
    revenue: dict[str, Decimal]
    logo_churn: domain.LogoChurn
    as_of: datetime


async def economics(tx: UnitOfWork) -> Economics:
    """Clients, subscriptions, MRR and revenue by currency, and logo churn over all time.

    Money is summed in Python: SQLite keeps exact decimals as text, where SUM would be a float."""
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
    revenue = domain.add_money({}, revenue_rows)
    ever = await session.scalar(select(func.count()).where(Client.first_subscribed_at.is_not(None)))
    lost = await session.scalar(select(func.count()).where(Client.subscription_status == "cancelled"))
    return Economics(
        clients=clients or 0,
        active_subscriptions=by_status.get("active", 0),
        paused_subscriptions=by_status.get("paused", 0),
        mrr=mrr,
        revenue=revenue,
        logo_churn=domain.logo_churn(lost=lost or 0, base=ever or 0),
        as_of=tx.now(),
    )

"""Subscriptions from billing's events: their lifecycle, the client's MRR and the dated MRR
movements ledger (new, expansion, contraction, churn, pause, resume), and price changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.retention import cancellations, domain, record
from services.retention.assessment import changed
from services.retention.context import Context
from services.retention.store import Client, MrrMovement, Subscription
from shared.uow import UnitOfWork, UnitOfWorkFactory

PRICE_JOB = "retention.price_changes"
PAGE = 200


async def _subscription(tx: UnitOfWork, *, lead_id: uuid.UUID, subscription_id: uuid.UUID) -> Subscription:
    sub = await tx.session.get(Subscription, subscription_id)
    if sub is None:
        # Its start went astray (dead-lettered, or never sent): keep what this event tells.
        sub = Subscription(id=subscription_id, lead_id=lead_id, status="new", updated_at=tx.now())
        tx.session.add(sub)
    return sub


async def _others_running(tx: UnitOfWork, sub: Subscription) -> bool:
    """Whether the client has another subscription running (active or paused)."""
    found = await tx.session.scalar(
        select(Subscription.id)
        .where(
            Subscription.lead_id == sub.lead_id,
            Subscription.id != sub.id,
            Subscription.status.in_(domain.RUNNING),
        )
        .limit(1)
    )
    return found is not None


def _move(tx: UnitOfWork, sub: Subscription, *, kind: str, amount: Decimal | None, at: datetime, logo: int = 0) -> None:
    """One dated change of MRR on the ledger (none for a subscription of unknown currency)."""
    if not sub.currency or (amount is None and not logo):
        return
    tx.session.add(
        MrrMovement(
            lead_id=sub.lead_id,
            subscription_id=sub.id,
            at=at,
            kind=kind,
            amount=amount or Decimal(0),
            currency=sub.currency,
            logo=logo,
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
    client = await record.client(tx, lead_id)
    sub = await _subscription(tx, lead_id=lead_id, subscription_id=subscription_id)
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
        running = await _others_running(tx, sub)
        _move(
            tx, sub, kind="expansion" if running else "new", amount=monthly_fee, at=started_at, logo=0 if running else 1
        )
    if client.first_subscribed_at is None:
        client.first_subscribed_at = started_at
    await _summarise(tx, client)
    await changed(tx, ctx, client)


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
    client = await record.client(tx, lead_id)
    sub = await _subscription(tx, lead_id=lead_id, subscription_id=subscription_id)
    if sub.status == "active":
        _move(tx, sub, kind="pause", amount=sub.monthly_fee, at=record.when(tx))
    elif sub.status == "new":  # first we hear of it: a client, paused
        sub.currency = currency
        logo = 0 if await _others_running(tx, sub) else 1
        _move(tx, sub, kind="new", amount=Decimal(0), at=record.when(tx), logo=logo)
    sub.status = "paused"
    sub.paused_fee = paused_fee
    sub.currency = sub.currency or currency
    sub.paused_at = tx.now()
    sub.paused_until = until
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    await changed(tx, ctx, client)


async def resume_subscription(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, subscription_id: uuid.UUID) -> None:
    """Back to active: the monthly fee is MRR again (a ``resume`` movement)."""
    client = await record.client(tx, lead_id)
    sub = await _subscription(tx, lead_id=lead_id, subscription_id=subscription_id)
    if sub.status == "paused":
        _move(tx, sub, kind="resume", amount=sub.monthly_fee, at=record.when(tx))
    sub.status = "active"
    sub.paused_until = None
    sub.updated_at = tx.now()
    await _summarise(tx, client)
    await changed(tx, ctx, client)


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
    several ending is ``contraction``. A client whose last one billing ended without the
    cancellation flow has left all the same (``cancellations.ended_by_billing``)."""
    client = await record.client(tx, lead_id)
    sub = await _subscription(tx, lead_id=lead_id, subscription_id=subscription_id)
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
        if domain.ended_by_termination(reason):
            # The agency let the client go: neither churn nor a cancellation (termination.py).
            from services.retention import termination

            running = await _others_running(tx, sub)
            _move(tx, sub, kind=domain.TERMINATED, amount=lost, at=effective_at, logo=0 if running else -1)
            if not running:
                await termination.mark_ended(tx, sub.lead_id, at=effective_at)
        elif await _others_running(tx, sub):
            _move(tx, sub, kind="contraction", amount=lost, at=effective_at)
        else:
            _move(tx, sub, kind="churn", amount=lost, at=effective_at, logo=-1)
            await cancellations.ended_by_billing(tx, sub, reason=reason, effective_at=effective_at)
    sub.status = "cancelled"
    sub.cancelled_at = effective_at
    sub.cancel_reason = reason
    sub.pending_fee = sub.pending_at = None
    sub.updated_at = tx.now()
    if client.first_subscribed_at is None:
        client.first_subscribed_at = sub.started_at or effective_at
    await _summarise(tx, client)
    await changed(tx, ctx, client)


# --------------------------------------------------------------------------- price changes


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
    client = await record.client(tx, lead_id)
    query = select(Subscription).where(Subscription.lead_id == lead_id, Subscription.status.in_(domain.RUNNING))
    if subscription_id is not None:
        query = query.where(Subscription.id == subscription_id)
    increase = False
    for sub in await tx.session.scalars(query):
        if sub.monthly_fee is None:
            continue
        new = domain.new_fee(sub.monthly_fee, new_price=new_price, percent=percent)
        diff = new - sub.monthly_fee
        if diff == 0:
            continue
        increase = increase or diff > 0
        sub.pending_fee, sub.pending_at = new, effective_at
        if sub.status == "active":
            _move(tx, sub, kind="expansion" if diff > 0 else "contraction", amount=abs(diff), at=effective_at)
    if increase:
        client.price_increase_at = effective_at
    record.timeline(tx, client, "price.change_scheduled", effective_at=effective_at, increase=increase)
    await changed(tx, ctx, client)


async def change_fee(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    subscription_id: uuid.UUID,
    reason: str,
    old_fee: Decimal,
    new_fee: Decimal,
    currency: str,
    effective_at: datetime,
) -> None:
    """A save offer that bills (a discount or a downgrade) lowered the fee from ``effective_at``,
    or the offer ran out and the full fee returned: a ``contraction`` (or the ``expansion``
    back) dated then, counted in NRR and GRR like any other; the fee itself changes then."""
    client = await record.client(tx, lead_id)
    sub = await _subscription(tx, lead_id=lead_id, subscription_id=subscription_id)
    sub.currency = sub.currency or currency
    if sub.monthly_fee is None:
        sub.monthly_fee = old_fee
    diff = new_fee - old_fee
    if sub.status == "active" and diff:
        _move(tx, sub, kind="expansion" if diff > 0 else "contraction", amount=abs(diff), at=effective_at)
    if effective_at <= tx.now():
        sub.monthly_fee = new_fee
    else:
        sub.pending_fee, sub.pending_at = new_fee, effective_at
    sub.updated_at = tx.now()
    record.timeline(tx, client, "subscription.price_changed", reason=reason, new_fee=new_fee, effective_at=effective_at)
    await _summarise(tx, client)
    await changed(tx, ctx, client)


async def apply_due_price_changes(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: fees whose change took effect become the subscription's fee (and MRR), a page
    of subscriptions a transaction; one that fails is kept aside (job ``retention.price_changes``).
    Returns how many changed."""
    due_now = (Subscription.pending_at.is_not(None), Subscription.pending_at <= now)
    async with uow() as tx:
        due = list(await tx.session.scalars(select(Subscription.id).where(*due_now)))

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Subscription]:
        query = select(Subscription).where(Subscription.id.in_(ids), *due_now)
        return {s.id: s for s in await tx.session.scalars(query)}

    async def apply(tx: UnitOfWork, sub: Subscription) -> None:
        sub.monthly_fee, sub.pending_fee, sub.pending_at = sub.pending_fee, None, None
        client = await tx.session.get(Client, sub.lead_id)
        if client is not None:
            await _summarise(tx, client)

    done = await ctx.jobs(PRICE_JOB).run(uow, due, apply, now=now, load=load, chunk=PAGE)
    return len(done.done)

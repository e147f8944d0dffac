"""Retainers: a subscription's life (start, pause, resume, cancel) and the billing cycle that
invoices each period in advance, exactly once.

Each use case runs inside the caller's unit of work: state changes and the events they cause
commit together (the outbox).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, hours, invoices, payments, price_changes, record
from services.billing.context import Billing
from services.billing.store import BilledPeriod, Invoice, Subscription
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.jobs import Pass
from shared.money import quantize
from shared.uow import UnitOfWork, UnitOfWorkFactory

CYCLE_JOB = "billing.cycle"
# Subscriptions billed per transaction by the cycle: a batch is split only when it fails.
_CYCLE_CHUNK = 50


async def start_subscription(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, deposit: Invoice | None = None
) -> None:
    """The retainer runs from now (``subscription.started``) and its first period is billed
    at once, in advance, prorated to the 1st of next month, less the deposit paid."""
    now = tx.now()
    subscription.status = domain.transition(subscription.status, "activate")
    subscription.started_at = now
    subscription.updated_at = now
    tx.emit(
        "subscription.started",
        ev.SubscriptionStarted(
            subscription_id=subscription.id,
            deal_id=subscription.deal_id,
            monthly_fee=subscription.monthly_fee,
            currency=subscription.currency,
            included_hours=subscription.included_hours,
            started_at=now,
        ),
        lead_id=subscription.lead_id,
    )
    await bill_period(tx, ctx, subscription, start=now, deposit=deposit)


async def list_subscriptions(tx: UnitOfWork, lead_id: uuid.UUID | None) -> list[Subscription]:
    """A client's subscriptions (or all), oldest first."""
    query = select(Subscription)
    if lead_id is not None:
        query = query.where(Subscription.lead_id == lead_id)
    rows = await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id))
    return list(rows)


async def _subscriptions_in(
    tx: UnitOfWork, lead_id: uuid.UUID, statuses: tuple[str, ...], *, only: uuid.UUID | None = None
) -> list[Subscription]:
    query = select(Subscription).where(Subscription.lead_id == lead_id, Subscription.status.in_(statuses))
    if only is not None:
        query = query.where(Subscription.id == only)
    rows = await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id).with_for_update())
    return list(rows)


async def cancel_subscriptions(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    lead_id: uuid.UUID | None,
    reason: str,
    effective_at: datetime,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """The client left: end the named subscription, or all of theirs when none is named
    (``subscription.cancelled`` for each that had started, with its fee, so retention can
    count the churned MRR). Periods due before the end are billed first; the unused part of
    the period the end falls in is given back by credit note; hours over the included ones in
    that last period are billed on a final overage invoice."""
    if lead_id is None:
        return []
    now = tx.now()
    cancelled = await _subscriptions_in(tx, lead_id, domain.RUNNING_STATUSES, only=subscription_id)
    for subscription in cancelled:
        was = subscription.status
        if was != "pending":
            await bill_due_periods(tx, ctx, subscription, until=min(effective_at, now))
            was = subscription.status
        subscription.status = domain.transition(was, "cancel")
        subscription.cancelled_at = now
        subscription.cancel_effective_at = effective_at
        subscription.cancel_reason = reason
        subscription.updated_at = now
        if was == "pending":
            # Never started, never in MRR: it is closed so a late deposit cannot start it,
            # but announcing a cancellation would count churn that never was.
            continue
        if was == "active":
            ctx.metrics.mrr_movement(
                tx, movement="churn", currency=subscription.currency, amount=subscription.monthly_fee
            )
        await _close_last_period(tx, ctx, subscription, effective_at=effective_at)
        tx.emit(
            "subscription.cancelled",
            ev.SubscriptionCancelled(
                subscription_id=subscription.id,
                reason=reason,
                effective_at=effective_at,
                monthly_fee=subscription.monthly_fee,
                currency=subscription.currency,
            ),
            lead_id=lead_id,
        )
    return cancelled


async def _close_last_period(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, effective_at: datetime
) -> None:
    start, end = subscription.current_period_start, subscription.current_period_end
    if start is None or end is None:
        return
    billed = await tx.session.get(BilledPeriod, (subscription.id, start))
    if billed is not None and billed.invoice_id is not None and effective_at < end:
        unused = domain.unused_credit(
            fee=billed.fee, period=(start, end), ends_at=effective_at, calendar_aligned=ctx.settings.calendar_months
        )
        invoice = await tx.session.get(Invoice, billed.invoice_id)
        if unused > 0 and invoice is not None and invoice.status != "void":
            unused = min(unused, invoice.amount - invoice.amount_credited)
            if unused > 0:
                await payments.issue_credit_note(
                    tx,
                    invoice_id=invoice.id,
                    amount=unused,
                    currency=invoice.currency,
                    reason=f"Unused retainer time after {effective_at:%d %b %Y} (prorated)",
                    refund=False,
                )
    # The last period's hours: reported, and the overage billed now (no next invoice will).
    used, lines = await hours.report_usage(tx, subscription, period=(start, end), billed=billed)
    if lines:
        await invoices.issue_invoice(
            tx,
            lead_id=subscription.lead_id,
            kind="overage",
            currency=subscription.currency,
            lines=lines,
            due_in_days=ctx.settings.invoice_due_days,
            subscription_id=subscription.id,
            period=(start, end),
            hours_used=used,
            included_hours=subscription.included_hours,
        )


async def apply_save_offer(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    lead_id: uuid.UUID | None,
    offer: ev.SaveOffer,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """A client who wanted to leave took a save offer. A pause keeps the subscription at the
    offer's (low) fee, from its next period, until the offer's months run out
    (``subscription.paused``); a paused subscription is not churn and not in MRR. Discounts
    and downgrades change the price: not billed here yet."""
    if lead_id is None or offer.kind != "pause":
        return []
    now = tx.now()
    fee = quantize(offer.fee or Decimal(0))
    paused = await _subscriptions_in(tx, lead_id, ("active",), only=subscription_id)
    for subscription in paused:
        if offer.currency is not None and offer.currency != subscription.currency:
            raise Invalid(
                f"pause fee in {offer.currency} for subscription {subscription.id} billed in {subscription.currency}"
            )
        await bill_due_periods(tx, ctx, subscription, until=now)
        subscription.status = domain.transition(subscription.status, "pause")
        subscription.paused_at = now
        subscription.paused_fee = fee
        subscription.paused_until = domain.add_months(now, offer.months) if offer.months else None
        subscription.updated_at = now
        ctx.metrics.mrr_movement(tx, movement="paused", currency=subscription.currency, amount=subscription.monthly_fee)
        tx.emit(
            "subscription.paused",
            ev.SubscriptionPaused(
                subscription_id=subscription.id,
                paused_fee=fee,
                currency=subscription.currency,
                until=subscription.paused_until,
            ),
            lead_id=lead_id,
        )
    return paused


async def resume_subscription(tx: UnitOfWork, ctx: Billing, subscription_id: uuid.UUID) -> Subscription:
    """A paused subscription runs again at its full fee from its next period
    (``subscription.resumed``); it is back in MRR."""
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    await bill_due_periods(tx, ctx, subscription, until=tx.now())
    _resume(tx, ctx, subscription)
    return subscription


def _resume(tx: UnitOfWork, ctx: Billing, subscription: Subscription) -> None:
    subscription.status = domain.transition(subscription.status, "resume")
    subscription.paused_at = None
    subscription.paused_until = None
    subscription.paused_fee = None
    subscription.updated_at = tx.now()
    ctx.metrics.mrr_movement(tx, movement="resumed", currency=subscription.currency, amount=subscription.monthly_fee)
    tx.emit(
        "subscription.resumed", ev.SubscriptionResumed(subscription_id=subscription.id), lead_id=subscription.lead_id
    )


# --------------------------------------------------------------------------- the billing cycle


async def bill_due_periods(tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, until: datetime) -> int:
    """Bill every period of the subscription that has begun by ``until`` and is not billed yet
    (a clock jump of three months bills three). Returns how many were billed."""
    count = 0
    while (
        subscription.status in domain.BILLED_STATUSES
        and subscription.current_period_end is not None
        and subscription.current_period_end <= until
    ):
        await bill_period(tx, ctx, subscription, start=subscription.current_period_end)
        count += 1
    return count


async def bill_period(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, start: datetime, deposit: Invoice | None = None
) -> Invoice | None:
    """Invoice the period beginning at ``start``, in advance, exactly once (its
    ``billed_periods`` row is the guard): the fee (the low fee while paused, prorated for a
    partial first period, the new price once a price change is effective) and the overage of
    the period that just closed."""
    settings = ctx.settings
    assert subscription.started_at is not None
    end = domain.period_after(start, anchor=subscription.started_at, calendar_aligned=settings.calendar_months)
    previous = (subscription.current_period_start, subscription.current_period_end)
    subscription.current_period_start, subscription.current_period_end = start, end
    subscription.updated_at = tx.now()
    if await tx.session.get(BilledPeriod, (subscription.id, start)) is not None:
        return None  # billed already (by another instance, or before a restart)

    if subscription.status == "paused" and domain.pause_ends(
        paused_until=subscription.paused_until, period_start=start
    ):
        _resume(tx, ctx, subscription)
    await price_changes.apply_scheduled_prices(tx, ctx, subscription, period_start=start)

    fee = domain.billed_fee(
        status=subscription.status, monthly_fee=subscription.monthly_fee, paused_fee=subscription.paused_fee
    )
    text, amount = domain.period_line(
        status=subscription.status, fee=fee, period=(start, end), calendar_aligned=settings.calendar_months
    )
    lines = [ev.InvoiceLine(description=text, quantity=Decimal(1), amount=amount)]

    used: Decimal | None = None
    if previous[0] is not None and previous[1] is not None and previous[0] != start:
        closed = await tx.session.get(BilledPeriod, (subscription.id, previous[0]))
        used, overage_lines = await hours.report_usage(
            tx, subscription, period=(previous[0], previous[1]), billed=closed
        )
        lines += overage_lines

    if deposit is not None and deposit.amount_paid > 0:
        subtotal = sum((line.amount for line in lines), Decimal(0))
        deduct = min(deposit.amount_paid, subtotal)
        lines.append(
            ev.InvoiceLine(
                description=f"Less deposit paid (invoice {deposit.number})", quantity=Decimal(1), amount=-deduct
            )
        )
        # A deposit larger than a short first period: the rest is the client's credit.
        await record.credit(
            tx, lead_id=subscription.lead_id, currency=subscription.currency, amount=deposit.amount_paid - deduct
        )

    invoice = await invoices.issue_invoice(
        tx,
        lead_id=subscription.lead_id,
        kind="subscription",
        currency=subscription.currency,
        lines=lines,
        due_in_days=settings.invoice_due_days,
        deal_id=subscription.deal_id,
        subscription_id=subscription.id,
        period=(start, end),
        hours_used=used,
        included_hours=subscription.included_hours,
    )
    await tx.session.flush()  # the invoice row first: the period points at it
    tx.session.add(
        BilledPeriod(
            subscription_id=subscription.id,
            period_start=start,
            period_end=end,
            invoice_id=invoice.id,
            fee=fee,
            status=subscription.status,
        )
    )
    await tx.session.flush()
    await payments.apply_credit_balance(tx, ctx, invoice)
    return invoice


async def subscriptions_due(tx: UnitOfWork, now: datetime) -> list[uuid.UUID]:
    """The subscriptions billed by the cycle whose current period has ended by ``now``."""
    rows = await tx.session.scalars(
        select(Subscription.id).where(
            Subscription.status.in_(domain.BILLED_STATUSES), Subscription.current_period_end <= now
        )
    )
    return list(rows)


async def bill_due_subscriptions(uow: UnitOfWorkFactory, ctx: Billing, now: datetime) -> Pass[uuid.UUID, int]:
    """Scheduled: bill every retainer period that has begun (scheduled prices take effect with
    it), 50 subscriptions a transaction. One that fails is kept aside with its reason and
    backoff (``shared.jobs``, job ``billing.cycle``) and the others are billed: it used to be a
    transaction per subscription, and a batch is split only when it fails."""
    async with uow() as tx:
        due = await subscriptions_due(tx, now)

    async def lock(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Subscription]:
        rows = await tx.session.scalars(
            select(Subscription).where(Subscription.id.in_(ids)).order_by(Subscription.id).with_for_update()
        )
        return {s.id: s for s in rows}

    async def bill(tx: UnitOfWork, subscription: Subscription) -> int:
        return await bill_due_periods(tx, ctx, subscription, until=tx.now())

    return await ctx.jobs(CYCLE_JOB).run(uow, due, bill, now=now, load=lock, chunk=_CYCLE_CHUNK)

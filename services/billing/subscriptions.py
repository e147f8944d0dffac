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
        fee = current_fee(subscription, at=subscription.current_period_start or now)
        if was == "active":
            ctx.metrics.mrr_movement(tx, movement="churn", currency=subscription.currency, amount=fee)
        await _close_last_period(tx, ctx, subscription, effective_at=effective_at)
        tx.emit(
            "subscription.cancelled",
            ev.SubscriptionCancelled(
                subscription_id=subscription.id,
                reason=reason,
                effective_at=effective_at,
                monthly_fee=fee,
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
    (``subscription.paused``); a paused subscription is not churn and not in MRR. A discount
    or a downgrade changes the fee of the periods it covers (``apply_price_offer``)."""
    if lead_id is None:
        return []
    if offer.kind in domain.PRICE_OFFER_KINDS:
        return await apply_price_offer(tx, ctx, lead_id=lead_id, offer=offer, subscription_id=subscription_id)
    if offer.kind != "pause":
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


async def apply_price_offer(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    lead_id: uuid.UUID,
    offer: ev.SaveOffer,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """A discount or a downgrade taken instead of leaving: the periods that start in the next
    ``months`` are billed at the offer's fee (a discount as its own line, a downgrade as the
    smaller plan with its hours), announced as ``subscription.price_changed`` so retention
    counts the contraction; when it runs out the full fee returns (``offer_ended``)."""
    now = tx.now()
    changed: list[Subscription] = []
    for subscription in await _subscriptions_in(tx, lead_id, ("active",), only=subscription_id):
        if offer.currency is not None and offer.currency != subscription.currency:
            raise Invalid(
                f"offer.currency: {offer.currency} for subscription {subscription.id} billed in {subscription.currency}"
            )
        await bill_due_periods(tx, ctx, subscription, until=now)
        assert subscription.current_period_end is not None
        terms = domain.price_offer(
            kind=offer.kind,
            monthly_fee=subscription.monthly_fee,
            fee=offer.fee,
            percent=offer.discount_percent,
            months=offer.months,
            included_hours=offer.included_hours,
            next_period=subscription.current_period_end,
        )
        subscription.offer_kind, subscription.offer_fee = terms.kind, terms.fee
        subscription.offer_percent, subscription.offer_included_hours = terms.percent, terms.included_hours
        subscription.offer_from, subscription.offer_until = terms.starts, terms.ends
        subscription.updated_at = now
        ctx.metrics.mrr_movement(
            tx, movement="contraction", currency=subscription.currency, amount=subscription.monthly_fee - terms.fee
        )
        tx.emit(
            "subscription.price_changed",
            ev.SubscriptionPriceChanged(
                subscription_id=subscription.id,
                reason=terms.kind,
                old_fee=quantize(subscription.monthly_fee),
                new_fee=terms.fee,
                currency=subscription.currency,
                discount_percent=terms.percent,
                included_hours=terms.included_hours,
                effective_at=terms.starts,
                until=terms.ends,
            ),
            lead_id=lead_id,
        )
        changed.append(subscription)
    return changed


def _end_price_offer(tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, period_start: datetime) -> None:
    """The offer ran out: the full fee is billed again from this period (``offer_ended``)."""
    old = subscription.offer_fee or Decimal(0)
    subscription.offer_kind = subscription.offer_fee = subscription.offer_percent = None
    subscription.offer_included_hours = subscription.offer_from = subscription.offer_until = None
    if subscription.status != "active":
        return  # a paused one is out of MRR; it comes back at its full fee when resumed
    ctx.metrics.mrr_movement(
        tx, movement="expansion", currency=subscription.currency, amount=subscription.monthly_fee - old
    )
    tx.emit(
        "subscription.price_changed",
        ev.SubscriptionPriceChanged(
            subscription_id=subscription.id,
            reason="offer_ended",
            old_fee=quantize(old),
            new_fee=quantize(subscription.monthly_fee),
            currency=subscription.currency,
            included_hours=subscription.included_hours,
            effective_at=period_start,
        ),
        lead_id=subscription.lead_id,
    )


def current_fee(subscription: Subscription, *, at: datetime) -> Decimal:
    """The monthly fee the subscription brings at ``at``: the offer's while one is in force."""
    if subscription.offer_fee is not None and domain.offer_applies(
        starts=subscription.offer_from, ends=subscription.offer_until, period_start=at
    ):
        return subscription.offer_fee
    return subscription.monthly_fee


async def resume_subscription(tx: UnitOfWork, ctx: Billing, subscription_id: uuid.UUID) -> Subscription:
    """A paused subscription runs again at its full fee (``subscription.resumed``); it is back
    in MRR. Resumed in the middle of a period billed at the low pause fee, the rest of that
    period is billed at once: the difference to the full fee, prorated by the second."""
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    now = tx.now()
    await bill_due_periods(tx, ctx, subscription, until=now)
    paused_fee = subscription.paused_fee
    _resume(tx, ctx, subscription)
    start, end = subscription.current_period_start, subscription.current_period_end
    billed = await tx.session.get(BilledPeriod, (subscription.id, start)) if start is not None else None
    if start is None or end is None or billed is None or billed.status != "paused" or paused_fee is None:
        return subscription
    owed = domain.resume_catch_up(
        monthly_fee=subscription.monthly_fee,
        paused_fee=billed.fee,
        period=(start, end),
        at=now,
        calendar_aligned=ctx.settings.calendar_months,
    )
    if owed > 0:
        days = Decimal((end - now).total_seconds() / 86400).quantize(Decimal("0.1"))
        await invoices.issue_invoice(
            tx,
            lead_id=subscription.lead_id,
            kind="subscription",
            currency=subscription.currency,
            lines=[
                ev.InvoiceLine(
                    description=(
                        f"Retainer resumed {now:%d %b %Y}: full fee for the rest of {domain.describe_period((start, end))}"
                        f" ({days} days, prorated; {quantize(billed.fee)} paid while paused)"
                    ),
                    quantity=Decimal(1),
                    amount=owed,
                )
            ],
            due_in_days=ctx.settings.invoice_due_days,
            deal_id=subscription.deal_id,
            subscription_id=subscription.id,
            period=(now, end),
        )
        billed.fee = subscription.monthly_fee  # the rest of the period is paid at the full fee
        billed.status = "active"
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
    if subscription.offer_kind is not None and domain.offer_over(ends=subscription.offer_until, period_start=start):
        _end_price_offer(tx, ctx, subscription, period_start=start)
    await price_changes.apply_scheduled_prices(tx, ctx, subscription, period_start=start)

    included = subscription.included_hours
    if (
        subscription.status == "active"
        and subscription.offer_kind is not None
        and subscription.offer_fee is not None
        and domain.offer_applies(starts=subscription.offer_from, ends=subscription.offer_until, period_start=start)
    ):
        fee, priced = domain.offer_lines(
            kind=subscription.offer_kind,
            monthly_fee=subscription.monthly_fee,
            fee=subscription.offer_fee,
            percent=subscription.offer_percent,
            included_hours=subscription.offer_included_hours,
            period=(start, end),
            calendar_aligned=settings.calendar_months,
        )
        if subscription.offer_kind == "downgrade" and subscription.offer_included_hours is not None:
            included = subscription.offer_included_hours
        lines = [ev.InvoiceLine(description=text, quantity=Decimal(1), amount=amount) for text, amount in priced]
    else:
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
            included_hours=included if included != subscription.included_hours else None,
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

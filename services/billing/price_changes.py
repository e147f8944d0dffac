"""Price changes: announced ahead with notices, applied to the periods that start on or after
the date (no mid-period proration, as Stripe's scheduled changes)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain
from services.billing.context import Billing
from services.billing.store import PriceChange, ScheduledPrice, Subscription
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.ids import time_ordered_id
from shared.money import quantize
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class ScheduledChange:
    """A price change announced: the new price per subscription and when clients are told."""

    change: PriceChange
    scheduled: list[ScheduledPrice]
    notice_dates: list[datetime]


async def schedule_price_change(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    percent: Decimal | None,
    new_price: Decimal | None,
    currency: str | None,
    effective_at: datetime,
    subscription_ids: list[uuid.UUID] | None,
    grandfathered: list[uuid.UUID],
) -> ScheduledChange:
    """Announce a price change (``price.change_scheduled`` per subscription, with the notice
    dates): invoices for periods starting on or after ``effective_at`` use the new price.
    Grandfathered subscriptions keep theirs. A date in the past is refused."""
    now = tx.now()
    notices = domain.notice_dates(effective_at=effective_at, now=now, days_before=ctx.settings.price_notice_days)
    domain.price_check(new_price=new_price, currency=currency)
    query = select(Subscription).where(Subscription.status.in_(domain.RUNNING_STATUSES))
    if subscription_ids:
        query = query.where(Subscription.id.in_(subscription_ids))
    elif currency is not None:
        query = query.where(Subscription.currency == currency)
    targets = list(await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id).with_for_update()))
    if subscription_ids:
        missing = set(subscription_ids) - {s.id for s in targets}
        if missing:
            raise NotFound(f"no running subscription {', '.join(sorted(map(str, missing)))}")
    held = set(grandfathered)
    change = PriceChange(
        id=time_ordered_id(),
        percent=percent,
        new_price=new_price,
        currency=currency,
        effective_at=effective_at,
        created_at=now,
    )
    tx.session.add(change)
    await tx.session.flush()
    scheduled: list[ScheduledPrice] = []
    for subscription in targets:
        if subscription.id in held:
            continue
        if currency is not None and subscription.currency != currency:
            raise Invalid(f"subscription {subscription.id} is billed in {subscription.currency}, not {currency}")
        fee = domain.new_price(old=subscription.monthly_fee, percent_change=percent, price=new_price)
        row = ScheduledPrice(
            price_change_id=change.id,
            subscription_id=subscription.id,
            old_fee=subscription.monthly_fee,
            new_fee=fee,
            effective_at=effective_at,
        )
        tx.session.add(row)
        scheduled.append(row)
        tx.emit(
            "price.change_scheduled",
            ev.PriceChangeScheduled(
                subscription_id=subscription.id,
                old_price=quantize(subscription.monthly_fee),
                new_price=fee,
                percent=percent,
                currency=subscription.currency,
                effective_at=effective_at,
                notice_dates=notices,
            ),
            lead_id=subscription.lead_id,
        )
    if not scheduled:
        raise Invalid("the price change applies to no subscription (all grandfathered or none running)")
    return ScheduledChange(change=change, scheduled=scheduled, notice_dates=notices)


async def apply_scheduled_prices(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, period_start: datetime
) -> None:
    """The prices that take effect by ``period_start`` become the subscription's fee (an MRR
    expansion or contraction when it is active)."""
    due = await tx.session.scalars(
        select(ScheduledPrice)
        .where(
            ScheduledPrice.subscription_id == subscription.id,
            ScheduledPrice.applied_at.is_(None),
            ScheduledPrice.effective_at <= period_start,
        )
        .order_by(ScheduledPrice.effective_at, ScheduledPrice.id)
    )
    for scheduled in due:
        old = subscription.monthly_fee
        subscription.monthly_fee = scheduled.new_fee
        scheduled.applied_at = tx.now()
        movement = domain.mrr_movement(old=old, new=scheduled.new_fee)
        if movement and domain.in_mrr(subscription.status):
            ctx.metrics.mrr_movement(
                tx, movement=movement, currency=subscription.currency, amount=scheduled.new_fee - old
            )

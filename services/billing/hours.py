"""Hours on a retainer: time recorded against a period's included hours, and each closed
period's usage reported (``hours.usage_reported``) with its overage line."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, subscriptions
from services.billing.context import Billing
from services.billing.store import BilledPeriod, ChangeOrder, Subscription, TimeEntry
from shared import events as ev
from shared.errors import NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class TimeRecorded:
    """A time entry and where its period stands: hours used so far, included, over."""

    time_entry_id: uuid.UUID
    subscription_id: uuid.UUID
    hours: Decimal
    period_start: datetime
    period_end: datetime | None
    used_hours: Decimal
    included_hours: Decimal | None
    overage_hours: Decimal


async def record_time(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    subscription_id: uuid.UUID,
    hours: Decimal,
    description: str | None,
    change_order_id: uuid.UUID | None,
) -> TimeRecorded:
    """Hours worked on a retainer count against its current period's included hours; what
    goes over is billed at the hourly rate on the next invoice. Naming a change order marks
    its work delivered."""
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    domain.time_entry_check(status=subscription.status, hours=hours)
    now = tx.now()
    # Bring the periods up to date first, so the hours land in the period they were worked in.
    await subscriptions.bill_due_periods(tx, ctx, subscription, until=now)
    if change_order_id is not None:
        order = await tx.session.get(ChangeOrder, change_order_id)
        if order is None or order.lead_id != subscription.lead_id:
            raise NotFound(f"no change order {change_order_id} for this client")
        order.work_done_at = order.work_done_at or now
    assert subscription.current_period_start is not None
    entry = TimeEntry(
        id=time_ordered_id(),
        subscription_id=subscription.id,
        lead_id=subscription.lead_id,
        period_start=subscription.current_period_start,
        hours=hours,
        description=description,
        change_order_id=change_order_id,
        worked_at=now,
        recorded_at=now,
    )
    tx.session.add(entry)
    await tx.session.flush()
    used = await _hours_in(tx, subscription, period_start=subscription.current_period_start)
    over, _ = domain.overage(used=used, included=subscription.included_hours, rate=subscription.hourly_rate)
    return TimeRecorded(
        time_entry_id=entry.id,
        subscription_id=subscription.id,
        hours=entry.hours,
        period_start=entry.period_start,
        period_end=subscription.current_period_end,
        used_hours=used,
        included_hours=subscription.included_hours,
        overage_hours=over,
    )


async def _hours_in(tx: UnitOfWork, subscription: Subscription, *, period_start: datetime) -> Decimal:
    # Added in Python: SQLite keeps exact decimals as text, and SUM would make them floats.
    rows = await tx.session.scalars(
        select(TimeEntry.hours).where(
            TimeEntry.subscription_id == subscription.id, TimeEntry.period_start == period_start
        )
    )
    return sum(rows, Decimal(0))


async def report_usage(
    tx: UnitOfWork, subscription: Subscription, *, period: tuple[datetime, datetime], billed: BilledPeriod | None
) -> tuple[Decimal, list[ev.InvoiceLine]]:
    """Report a closed period's hours (``hours.usage_reported``, once) and the overage line."""
    if billed is not None and billed.usage_reported_at is not None:
        return Decimal(0), []
    used = await _hours_in(tx, subscription, period_start=period[0])
    # A downgraded period included fewer hours than the subscription's plan.
    included = subscription.included_hours
    if billed is not None and billed.included_hours is not None:
        included = billed.included_hours
    over, cost = domain.overage(used=used, included=included, rate=subscription.hourly_rate)
    if billed is not None:
        billed.usage_reported_at = tx.now()
    tx.emit(
        "hours.usage_reported",
        ev.HoursUsageReported(
            subscription_id=subscription.id,
            period_start=period[0],
            period_end=period[1],
            included_hours=included,
            used_hours=used,
            overage_hours=over,
            overage_amount=cost,
            currency=subscription.currency,
            utilisation=domain.utilisation(used=used, included=included),
        ),
        lead_id=subscription.lead_id,
    )
    if cost <= 0:
        return used, []
    return used, [
        ev.InvoiceLine(
            description=domain.overage_text(
                period=domain.describe_period(period),
                over=over,
                included=included,
                rate=subscription.hourly_rate,
            ),
            quantity=over,
            amount=cost,
        )
    ]


@dataclass(frozen=True)
class PeriodHours:
    """One period of a retainer: the hours worked against those it included."""

    period_start: datetime
    period_end: datetime | None
    used_hours: Decimal
    included_hours: Decimal | None
    overage_hours: Decimal
    current: bool


async def hours_by_period(tx: UnitOfWork, subscription_id: uuid.UUID) -> list[PeriodHours]:
    """Every period of the subscription, newest first: hours used (time entries), included (the
    period's own when a downgrade changed them) and over; the current one is still open."""
    subscription = await tx.session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    periods = {
        p.period_start: p
        for p in await tx.session.scalars(select(BilledPeriod).where(BilledPeriod.subscription_id == subscription.id))
    }
    used: dict[datetime, Decimal] = {}
    for start, hours in await tx.session.execute(
        select(TimeEntry.period_start, TimeEntry.hours).where(TimeEntry.subscription_id == subscription.id)
    ):
        used[start] = used.get(start, Decimal(0)) + hours
    out = []
    for start in sorted(set(periods) | set(used), reverse=True):
        billed = periods.get(start)
        included = billed.included_hours if billed is not None and billed.included_hours is not None else None
        included = included if included is not None else subscription.included_hours
        worked = used.get(start, Decimal(0))
        over, _ = domain.overage(used=worked, included=included, rate=subscription.hourly_rate)
        out.append(
            PeriodHours(
                period_start=start,
                period_end=billed.period_end if billed is not None else None,
                used_hours=worked,
                included_hours=included,
                overage_hours=over,
                current=start == subscription.current_period_start,
            )
        )
    return out

"""Retainer rules: subscription states, billing periods and proration, pauses, MRR.

Periods are billed in advance; what a period costs and which part of it was used are decided
here from values, never from the clock.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from decimal import Decimal

from services.billing.domain.invoices import ZERO
from shared.errors import Conflict
from shared.money import quantize

SUBSCRIPTION_STATUSES = ("pending", "active", "paused", "cancelled")
# The states a subscription is billed in, and the ones a price change or cancellation reaches.
BILLED_STATUSES = ("active", "paused")
RUNNING_STATUSES = ("pending", "active", "paused")

# Which states each action may leave from. Cancelling a cancelled subscription is a no-op,
# handled by the caller, so it is not listed.
_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"pending"}), "active"),
    "pause": (frozenset({"active"}), "paused"),
    "resume": (frozenset({"paused"}), "active"),
    "cancel": (frozenset(RUNNING_STATUSES), "cancelled"),
}


def transition(status: str, action: str) -> str:
    """The subscription status after ``action``; Conflict when it may not happen from here."""
    sources, target = _TRANSITIONS[action]
    if status not in sources:
        raise Conflict(f"cannot {action} a subscription that is {status}")
    return target


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months, the day clamped to the month's end (Jan 31 + 1 is
    Feb 28/29), as billing periods are counted."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


# --------------------------------------------------------------------------- billing periods


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_after(start: datetime, *, anchor: datetime, calendar_aligned: bool) -> datetime:
    """The end of the billing period that begins at ``start``.

    Calendar-aligned periods end on the 1st of the next month (as Stripe's billing cycle
    anchor on the 1st); otherwise a period is one month from the subscription's anchor,
    counted from the anchor (not from ``start``) so Jan 31 -> Feb 28 -> Mar 31 does not drift.
    """
    if calendar_aligned:
        return add_months(month_start(start), 1)
    months = (start.year - anchor.year) * 12 + start.month - anchor.month
    end = add_months(anchor, months + 1)
    while end <= start:  # start fell after the anchor's day in its month
        months += 1
        end = add_months(anchor, months + 1)
    return end


def prorate(amount: Decimal, *, period: tuple[datetime, datetime], used: tuple[datetime, datetime]) -> Decimal:
    """``amount`` for the part ``used`` of ``period``, by the second (Stripe prorates by the
    second too), rounded to cents. A used span outside the period counts nothing."""
    start, end = period
    if end <= start:
        raise ValueError("a billing period ends after it starts")
    lo, hi = max(start, used[0]), min(end, used[1])
    if hi <= lo:
        return ZERO
    return quantize(amount * Decimal((hi - lo).total_seconds()) / Decimal((end - start).total_seconds()))


def full_month(period: tuple[datetime, datetime], *, calendar_aligned: bool) -> tuple[datetime, datetime]:
    """The whole month a (possibly partial) period belongs to, the base proration divides by."""
    start, end = period
    if calendar_aligned:
        return month_start(start), add_months(month_start(start), 1)
    return add_months(end, -1), end


def describe_period(period: tuple[datetime, datetime]) -> str:
    """``01 Jan 2026 - 31 Jan 2026``: a period by its first and last day."""
    start, end = period
    last = end - timedelta(seconds=1)
    return f"{start:%d %b %Y} - {last:%d %b %Y}"


def period_line(
    *, status: str, fee: Decimal, period: tuple[datetime, datetime], calendar_aligned: bool
) -> tuple[str, Decimal]:
    """The text and amount of a period's fee line: the whole fee for a whole month, else the
    fee prorated by the second, saying how many days of how many it bills."""
    start, end = period
    full = full_month(period, calendar_aligned=calendar_aligned)
    amount = fee if period == full else prorate(fee, period=full, used=period)
    label = "Retainer (paused, low fee)" if status == "paused" else "Retainer"
    text = f"{label}, {describe_period(period)}"
    if period != full:
        days = Decimal((end - start).total_seconds() / 86400).quantize(Decimal("0.1"))
        text += f" (prorated: {days} of {(full[1] - full[0]).days} days of {quantize(fee)})"
    return text, amount


def unused_credit(
    *, fee: Decimal, period: tuple[datetime, datetime], ends_at: datetime, calendar_aligned: bool
) -> Decimal:
    """What a cancellation at ``ends_at`` gives back of a period billed in advance: the fee
    prorated over the part of the period after the end (nothing when it ends after the period)."""
    start, end = period
    if ends_at >= end:
        return ZERO
    full = full_month(period, calendar_aligned=calendar_aligned)
    return prorate(fee, period=full, used=(max(ends_at, start), end))


# --------------------------------------------------------------------------- pause


def billed_fee(*, status: str, monthly_fee: Decimal, paused_fee: Decimal | None) -> Decimal:
    """What one period costs: the low pause fee while paused, the monthly fee otherwise."""
    if status == "paused":
        return paused_fee if paused_fee is not None else ZERO
    return monthly_fee


def pause_ends(*, paused_until: datetime | None, period_start: datetime) -> bool:
    """A pause with an end resumes the subscription for the first period starting at or after it."""
    return paused_until is not None and paused_until <= period_start


def in_mrr(status: str) -> bool:
    """Only an active subscription counts in MRR: a paused one is not churn and not revenue."""
    return status == "active"

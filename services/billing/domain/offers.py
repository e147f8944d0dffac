"""Save offers that bill (docs/design.md, "Offers that bill"): a discount or a downgrade a client
took instead of leaving changes the fee of the periods that start in its window, and the full fee
returns after it. Values in, decisions out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.billing.domain.invoices import ZERO
from services.billing.domain.retainers import add_months, describe_period, full_month, period_line, prorate
from shared.errors import Invalid
from shared.money import quantize

PRICE_OFFER_KINDS = ("discount", "downgrade")
_HUNDRED = Decimal(100)
# The longest a save offer may run: two years of periods.
MAX_OFFER_MONTHS = 24


@dataclass(frozen=True)
class PriceOffer:
    """A discount or downgrade in force for the periods starting in ``[starts, ends)``."""

    kind: str
    fee: Decimal
    percent: Decimal | None
    included_hours: Decimal | None
    starts: datetime
    ends: datetime


def price_offer(
    *,
    kind: str,
    monthly_fee: Decimal,
    fee: Decimal | None,
    percent: Decimal | None,
    months: int | None,
    included_hours: Decimal | None,
    next_period: datetime,
) -> PriceOffer:
    """The offer as billing will apply it, from the next period (the current one is billed in
    advance already) for ``months`` periods. A discount's fee follows from its percent when the
    offer names none; a fee above the monthly fee, a percent outside (0, 100] or no months is
    refused (``Invalid``, naming the field)."""
    if kind not in PRICE_OFFER_KINDS:
        raise Invalid(f"offer.kind: {kind!r} does not change the price (one of {', '.join(PRICE_OFFER_KINDS)})")
    if months is None or not 1 <= months <= MAX_OFFER_MONTHS:
        raise Invalid(f"offer.months: a {kind} runs 1 to {MAX_OFFER_MONTHS} months, not {months}")
    if percent is not None and not ZERO < percent <= _HUNDRED:
        raise Invalid(f"offer.discount_percent: {percent} is not a discount (over 0, at most 100)")
    if fee is None:
        if kind != "discount" or percent is None:
            raise Invalid(f"offer.fee: a {kind} names its fee")
        fee = monthly_fee * (_HUNDRED - percent) / _HUNDRED
    fee = quantize(fee)
    if fee < 0 or fee > monthly_fee:
        raise Invalid(f"offer.fee: {fee} is not below the monthly fee {quantize(monthly_fee)}")
    if kind == "discount" and percent is None:
        percent = quantize((monthly_fee - fee) * _HUNDRED / monthly_fee) if monthly_fee else _HUNDRED
    return PriceOffer(
        kind=kind,
        fee=fee,
        percent=percent if kind == "discount" else None,
        included_hours=included_hours if kind == "downgrade" else None,
        starts=next_period,
        ends=add_months(next_period, months),
    )


def offer_applies(*, starts: datetime | None, ends: datetime | None, period_start: datetime) -> bool:
    """Whether the period beginning at ``period_start`` is billed under the offer."""
    return starts is not None and ends is not None and starts <= period_start < ends


def offer_over(*, ends: datetime | None, period_start: datetime) -> bool:
    """Whether the offer has run out by the period beginning at ``period_start``."""
    return ends is not None and period_start >= ends


def offer_lines(
    *,
    kind: str,
    monthly_fee: Decimal,
    fee: Decimal,
    percent: Decimal | None,
    included_hours: Decimal | None,
    period: tuple[datetime, datetime],
    calendar_aligned: bool,
) -> tuple[Decimal, list[tuple[str, Decimal]]]:
    """A period billed under an offer: the monthly fee it bills at (the offer's) and its lines,
    prorated like any period. A discount shows the full fee and the discount as its own line; a
    downgrade bills the smaller plan."""
    text, full = period_line(status="active", fee=monthly_fee, period=period, calendar_aligned=calendar_aligned)
    _, offered = period_line(status="active", fee=fee, period=period, calendar_aligned=calendar_aligned)
    if kind == "discount":
        share = format((percent or ZERO).normalize(), "f")
        return fee, [
            (text, full),
            (f"Save offer: {share}% off, {describe_period(period)}", offered - full),
        ]
    hours = f", {format(included_hours.normalize(), 'f')} hours included" if included_hours is not None else ""
    plan_text, _ = period_line(status="active", fee=fee, period=period, calendar_aligned=calendar_aligned)
    return fee, [(plan_text.replace("Retainer", f"Retainer, downgraded plan{hours}", 1), offered)]


def resume_catch_up(
    *,
    monthly_fee: Decimal,
    paused_fee: Decimal,
    period: tuple[datetime, datetime],
    at: datetime,
    calendar_aligned: bool,
) -> Decimal:
    """Resuming mid-period: the rest of the period, billed at the low pause fee in advance, owes
    the difference to the full fee, prorated by the second from ``at`` to the period's end."""
    start, end = period
    if not start <= at < end or monthly_fee <= paused_fee:
        return ZERO
    whole = full_month(period, calendar_aligned=calendar_aligned)
    return prorate(monthly_fee - paused_fee, period=whole, used=(at, end))

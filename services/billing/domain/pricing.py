"""Price-change rules: the new price, when clients are told, and how MRR moves."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from shared.errors import Invalid
from shared.money import quantize


def new_price(*, old: Decimal, percent_change: Decimal | None, price: Decimal | None) -> Decimal:
    """The fee after a change given as a percent of ``old`` or as a new price (one of the two)."""
    if (percent_change is None) == (price is None):
        raise Invalid("give either percent or new_price, not both and not neither")
    if price is not None:
        if price < 0:
            raise Invalid("new_price must not be negative")
        return quantize(price)
    assert percent_change is not None
    if percent_change <= -100:
        raise Invalid("percent must be above -100")
    return quantize(old * (Decimal(100) + percent_change) / Decimal(100))


def price_check(*, new_price: Decimal | None, currency: str | None) -> None:
    """A new price is in a currency: prices are never converted."""
    if new_price is not None and currency is None:
        raise Invalid("a new_price needs its currency (prices are never converted)")


def notice_dates(*, effective_at: datetime, now: datetime, days_before: list[int]) -> list[datetime]:
    """When clients are told (30 and 7 days before by default): those still ahead, and now
    when every one of them has passed (a late notice is still a notice)."""
    if effective_at <= now:
        raise Invalid(
            f"effective_at {effective_at.isoformat()} is not in the future: a price change in the past is refused"
        )
    ahead = sorted(effective_at - timedelta(days=d) for d in days_before if effective_at - timedelta(days=d) > now)
    return ahead or [now]


def mrr_movement(*, old: Decimal, new: Decimal) -> str | None:
    """How a fee change moves MRR: ``expansion``, ``contraction`` or nothing."""
    if new > old:
        return "expansion"
    if new < old:
        return "contraction"
    return None

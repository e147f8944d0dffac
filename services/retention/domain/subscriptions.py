"""Subscriptions as retention sees them: one status for a client's several, MRR by currency,
a scheduled price's new fee."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from shared.money import quantize

SUBSCRIPTION_STATUSES = ("none", "active", "paused", "cancelled")
RUNNING = ("active", "paused")


@dataclass(frozen=True)
class SubscriptionView:
    """What MRR reads of a subscription."""

    status: str  # active | paused | cancelled
    monthly_fee: Decimal | None
    currency: str | None


def subscription_status(statuses: Iterable[str]) -> str:
    """One status for a client with several subscriptions: the liveliest one wins."""
    seen = set(statuses)
    for status in ("active", "paused", "cancelled"):
        if status in seen:
            return status
    return "none"


def mrr_by_currency(subscriptions: Iterable[SubscriptionView]) -> dict[str, Decimal]:
    """Monthly recurring revenue of active subscriptions; a paused one is not MRR (nor churn)."""
    totals: dict[str, Decimal] = {}
    for sub in subscriptions:
        if sub.status == "active" and sub.monthly_fee is not None and sub.currency:
            totals[sub.currency] = totals.get(sub.currency, Decimal(0)) + sub.monthly_fee
    return dict(sorted(totals.items()))


def add_money(totals: Mapping[str, Decimal], rows: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Sum (currency, amount) rows into per-currency totals; currencies never mix."""
    result = dict(totals)
    for currency, amount in rows:
        result[currency] = result.get(currency, Decimal(0)) + amount
    return dict(sorted(result.items()))


def new_fee(fee: Decimal, *, new_price: Decimal | None, percent: Decimal | None) -> Decimal:
    """The fee a scheduled price change sets: the new price, else the fee moved by ``percent``."""
    if new_price is not None:
        return new_price
    return quantize(fee * (1 + (percent or Decimal(0)) / 100))

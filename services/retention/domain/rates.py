"""Exchange rates set as data, dated: the economics in one reporting currency.

A rate says what one unit of ``currency`` is worth in ``quote`` from ``valid_from`` on (until the
next rate of the pair). An amount is converted at the rate of its own date (a payment at the rate
of the day it was paid, an MRR movement at the rate of the day it moved), directly or through the
inverse of the opposite pair; an amount with no rate at its date is left out and named, so a figure
that needed it says which rate is missing instead of being silently wrong.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from shared.money import quantize

_PLACES = Decimal("0.00000001")


@dataclass(frozen=True)
class Rate:
    currency: str
    quote: str
    valid_from: datetime
    rate: Decimal


def check_rate(rate: Rate) -> None:
    """A usable rate: two different ISO codes and a positive finite number (``ValueError``
    names the field)."""
    if rate.currency == rate.quote:
        raise ValueError(f"quote: a rate from {rate.currency} to itself is always 1")
    if not rate.rate.is_finite() or rate.rate <= 0:
        raise ValueError(f"rate: {rate.rate} is not a positive number")


@dataclass
class Converter:
    """Converts dated amounts into ``reporting``; remembers every (currency, date) it could not."""

    reporting: str
    rates: Iterable[Rate]
    missing: dict[str, datetime] = field(default_factory=dict)
    left_out: int = 0

    def __post_init__(self) -> None:
        self._pairs: dict[tuple[str, str], list[tuple[datetime, Decimal]]] = {}
        for r in sorted(self.rates, key=lambda r: r.valid_from):
            self._pairs.setdefault((r.currency, r.quote), []).append((r.valid_from, r.rate))

    def rate(self, currency: str, at: datetime) -> Decimal | None:
        """What one unit of ``currency`` was worth in the reporting currency at ``at``."""
        if currency == self.reporting:
            return Decimal(1)
        direct = self._at(self._pairs.get((currency, self.reporting)), at)
        if direct is not None:
            return direct
        inverse = self._at(self._pairs.get((self.reporting, currency)), at)
        return (Decimal(1) / inverse).quantize(_PLACES) if inverse else None

    @staticmethod
    def _at(series: list[tuple[datetime, Decimal]] | None, at: datetime) -> Decimal | None:
        if not series:
            return None
        i = bisect_right([moment for moment, _ in series], at)
        return series[i - 1][1] if i else None

    def convert(self, amount: Decimal, currency: str, at: datetime) -> Decimal | None:
        """``amount`` in the reporting currency, or None (and the gap remembered)."""
        rate = self.rate(currency, at)
        if rate is None:
            first = self.missing.get(currency)
            self.missing[currency] = min(first, at) if first else at
            self.left_out += 1
            return None
        return quantize(amount * rate) if currency != self.reporting else amount

    def reason(self) -> str | None:
        """Which rates were missing, or None."""
        if not self.missing:
            return None
        gaps = ", ".join(
            f"{currency}->{self.reporting} on {moment:%Y-%m-%d}" for currency, moment in sorted(self.missing.items())
        )
        return f"no exchange rate for {gaps} (and later): {self.left_out} amounts left out; set them with PUT /exchange-rates"

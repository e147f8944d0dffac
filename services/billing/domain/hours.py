"""Hours on a retainer: what one time entry may be, overage and utilisation."""

from __future__ import annotations

from decimal import Decimal

from services.billing.domain.invoices import ZERO
from shared.errors import Conflict, Invalid
from shared.money import quantize

# One entry is one day's work at most: more is a typo (or several entries).
MAX_ENTRY_HOURS = Decimal(24)


def time_entry_check(*, status: str, hours: Decimal) -> None:
    """Time is recorded on an active retainer only, in entries of more than 0 and at most 24 hours."""
    if status != "active":
        raise Conflict(f"the retainer is {status}: time can only be recorded on an active retainer")
    if hours <= 0:
        raise Invalid("hours must be greater than zero")
    if hours > MAX_ENTRY_HOURS:
        raise Invalid("one time entry is at most 24 hours")


def overage(*, used: Decimal, included: Decimal | None, rate: Decimal | None) -> tuple[Decimal, Decimal]:
    """Hours over the included ones and their price at ``rate`` (0 without a rate)."""
    over = max(used - (included or Decimal(0)), Decimal(0))
    return over, quantize(over * rate) if rate is not None else ZERO


def utilisation(*, used: Decimal, included: Decimal | None) -> Decimal | None:
    """Share of the included hours used (1 = all; under 1 is under-use, over 1 overuse)."""
    if not included:
        return None
    return (used / included).quantize(Decimal("0.0001"))


def overage_text(*, period: str, over: Decimal, included: Decimal | None, rate: Decimal | None) -> str:
    """The overage line of an invoice: ``Overage 01 Jan 2026 - 31 Jan 2026: 2 h over 10 h included at 120.00/h``."""
    return (
        f"Overage {period}: {format(over.normalize(), 'f')} h over "
        f"{format((included or Decimal(0)).normalize(), 'f')} h included at {quantize(rate or Decimal(0))}/h"
    )

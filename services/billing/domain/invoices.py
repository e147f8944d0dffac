"""Invoice rules: numbers, due dates, statuses, what is still owed, and when one may be voided."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from shared.errors import Conflict
from shared.money import quantize

ZERO = Decimal("0.00")

INVOICE_KINDS = ("deposit", "milestone", "final", "subscription", "change_order", "overage")
INVOICE_STATUSES = ("open", "paid", "void")


def invoice_number(year: int, sequence: int) -> str:
    """``2026-000042``: sequential per year; the year restarts the sequence at 1."""
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"{year:04d}-{sequence:06d}"


def credit_note_number(*, year: int, sequence: int) -> str:
    """``CN-2026-000042``: credit notes have a sequence of their own, numbered as invoices are."""
    return f"CN-{invoice_number(year, sequence)}"


def next_sequence(last: int) -> int:
    """The number after ``last``; a counter row holds ``last`` per year (0 before the first)."""
    return last + 1


def due_date(issued_at: datetime, *, days: int) -> datetime:
    return issued_at + timedelta(days=days)


def amount_due(amount: Decimal, amount_paid: Decimal) -> Decimal:
    """What is left to pay of ``amount`` once ``amount_paid`` is in (never below zero)."""
    return max(amount - amount_paid, ZERO)


def amount_open(amount: Decimal, amount_paid: Decimal, amount_credited: Decimal) -> Decimal:
    """What the client still owes: credit notes reduce it as payments do."""
    return max(amount - amount_paid - amount_credited, ZERO)


def amount_asked(*, status: str, amount: Decimal, amount_paid: Decimal, amount_credited: Decimal) -> Decimal:
    """What an invoice asks of the client now: a void invoice asks for nothing any more."""
    if status == "void":
        return ZERO
    return amount_open(amount, amount_paid, amount_credited)


def invoice_status(*, amount: Decimal, amount_paid: Decimal, voided: bool) -> str:
    """``void``, ``paid`` once paid in full (an invoice of nothing is paid at issue), else ``open``."""
    if voided:
        return "void"
    return "paid" if amount_paid >= amount else "open"


def void_check(*, status: str, amount_paid: Decimal) -> None:
    """Only an open invoice with nothing paid may be voided (money received must be refunded,
    not voided away)."""
    if status == "paid":
        raise Conflict("a paid invoice cannot be voided")
    if amount_paid > 0:
        raise Conflict("a partly paid invoice cannot be voided: refund the payments first")


def days_sales_outstanding(*, receivables: Decimal, invoiced: Decimal, window_days: int) -> Decimal:
    """Receivables / amounts invoiced in the last ``window_days`` x ``window_days``, to a tenth
    of a day (for a currency something was invoiced in, in the window)."""
    return (receivables / invoiced * window_days).quantize(Decimal("0.1"))


def totals_by_currency(amounts: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Amounts added per currency (never converted), rounded to cents."""
    totals: dict[str, Decimal] = {}
    for currency, amount in amounts:
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    return {currency: quantize(total) for currency, total in totals.items()}

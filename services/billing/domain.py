"""Pure rules of billing: deposits, invoice numbers, payment application, subscription states.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
Money is always ``Decimal``, rounded to cents with banker's rounding (``shared.money.quantize``).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from shared.errors import Conflict, Invalid
from shared.money import quantize

ZERO = Decimal("0.00")

INVOICE_KINDS = ("deposit", "milestone", "final", "subscription", "change_order", "overage")
INVOICE_STATUSES = ("open", "paid", "void")
SUBSCRIPTION_STATUSES = ("pending", "active", "paused", "cancelled")
# Manual payments name how the money came in. A closed list keeps the metrics' label set small
# and catches typos ("bank transfer" vs "bank_transfer") before they split the reports.
PAYMENT_METHODS = frozenset({"bank_transfer", "card", "cash", "cheque", "direct_debit", "paypal", "other"})


# --------------------------------------------------------------------------- deposits


def deposit_amount(
    *, kind: str, total: Decimal, monthly_fee: Decimal | None, deposit_share: Decimal
) -> Decimal:
    """The deposit asked before work starts, rounded to cents.

    - a project: ``total x deposit_share`` (the share of the whole signed estimate);
    - a retainer: ``monthly_fee x deposit_share``: the deposit is a share of the *first month*,
      not of the estimate's total (which may add one-off setup lines), because a retainer is
      a monthly commitment and the later monthly invoices bill the rest.

    A share of 0 gives 0: the deal needs no deposit and may start at once.
    """
    if not Decimal(0) <= deposit_share <= Decimal(1):
        raise Invalid(f"deposit_share must be between 0 and 1, got {deposit_share}")
    if kind == "project":
        base = total
    elif kind == "retainer":
        if monthly_fee is None:
            raise Invalid("a retainer needs monthly_fee to compute its deposit")
        base = monthly_fee
    else:
        raise Invalid(f"unknown deal kind {kind!r}: expected project or retainer")
    if base < 0:
        raise Invalid(f"the deposit base must not be negative, got {base}")
    return quantize(base * deposit_share)


def percent(share: Decimal) -> str:
    """``Decimal("0.30")`` as ``"30"`` for invoice text (no exponent, no trailing zeros)."""
    return format((share * 100).normalize(), "f")


def deposit_line(*, kind: str, title: str, deposit_share: Decimal) -> str:
    base = "the first month" if kind == "retainer" else "the estimate"
    return f"Deposit: {percent(deposit_share)}% of {base} ({title})"


# --------------------------------------------------------------------------- invoice numbers


def invoice_number(year: int, sequence: int) -> str:
    """``2026-000042``: sequential per year; the year restarts the sequence at 1."""
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"{year:04d}-{sequence:06d}"


def next_sequence(last: int) -> int:
    """The number after ``last``; a counter row holds ``last`` per year (0 before the first)."""
    return last + 1


def due_date(issued_at: datetime, *, days: int) -> datetime:
    return issued_at + timedelta(days=days)


# --------------------------------------------------------------------------- payments


@dataclass(frozen=True)
class PaymentApplication:
    """What one payment does to one invoice."""

    applied: Decimal  # the part that pays the invoice
    credited: Decimal  # the surplus, credited to the client's balance in the same currency
    amount_paid: Decimal  # the invoice's total paid after this payment
    amount_due: Decimal
    status: str
    settles: bool  # this payment is the one that made the invoice fully paid


def amount_due(amount: Decimal, amount_paid: Decimal) -> Decimal:
    return max(amount - amount_paid, ZERO)


def invoice_status(*, amount: Decimal, amount_paid: Decimal, voided: bool) -> str:
    if voided:
        return "void"
    return "paid" if amount_paid >= amount else "open"


def apply_payment(
    *,
    invoice_amount: Decimal,
    invoice_currency: str,
    already_paid: Decimal,
    status: str,
    amount: Decimal,
    currency: str,
) -> PaymentApplication:
    """Apply a payment to an invoice: partial payments add up; a surplus becomes credit.

    Refuses (with nothing changed) a payment to a void invoice, in another currency, or of
    zero, negative or sub-cent amount. Paying an already paid invoice is accepted: the money
    was received, so all of it becomes credit rather than being turned away.
    """
    if status == "void":
        raise Conflict("the invoice is void: it can no longer be paid")
    if currency != invoice_currency:
        raise Invalid(f"payment currency {currency} differs from the invoice's {invoice_currency}")
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    due = amount_due(invoice_amount, already_paid)
    applied = min(amount, due)
    paid = already_paid + applied
    new_status = invoice_status(amount=invoice_amount, amount_paid=paid, voided=False)
    return PaymentApplication(
        applied=applied,
        credited=amount - applied,
        amount_paid=paid,
        amount_due=amount_due(invoice_amount, paid),
        status=new_status,
        settles=status != "paid" and new_status == "paid",
    )


def days_late(*, due_at: datetime, paid_at: datetime) -> int:
    """Whole days after the due date; 0 when paid on time."""
    return max((paid_at - due_at).days, 0)


def void_check(*, status: str, amount_paid: Decimal) -> None:
    """Only an open invoice with nothing paid may be voided (money received must be refunded,
    not voided away)."""
    if status == "paid":
        raise Conflict("a paid invoice cannot be voided")
    if amount_paid > 0:
        raise Conflict("a partly paid invoice cannot be voided: refund the payments first")


# --------------------------------------------------------------------------- subscriptions

# Which states each action may leave from. Cancelling a cancelled subscription is a no-op,
# handled by the caller, so it is not listed.
_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"pending"}), "active"),
    "pause": (frozenset({"active"}), "paused"),
    "resume": (frozenset({"paused"}), "active"),
    "cancel": (frozenset({"pending", "active", "paused"}), "cancelled"),
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

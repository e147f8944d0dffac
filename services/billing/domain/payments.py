"""Payment rules: what one payment (or a declined charge) may do to an invoice, and how a
credit note lands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.billing.domain.invoices import ZERO, amount_due, amount_open, invoice_status
from shared.errors import Conflict, Invalid
from shared.money import quantize

# Manual payments name how the money came in. A closed list keeps the metrics' label set small
# and catches typos ("bank transfer" vs "bank_transfer") before they split the reports.
PAYMENT_METHODS = frozenset({"bank_transfer", "card", "cash", "cheque", "direct_debit", "paypal", "other"})


@dataclass(frozen=True)
class PaymentApplication:
    """What one payment does to one invoice."""

    applied: Decimal  # the part that pays the invoice
    credited: Decimal  # the surplus, credited to the client's balance in the same currency
    amount_paid: Decimal  # the invoice's total paid after this payment
    amount_due: Decimal
    status: str
    settles: bool  # this payment is the one that made the invoice fully paid


def charge_check(*, status: str, invoice_currency: str, currency: str, amount: Decimal) -> None:
    """The refusals every charge of an invoice meets, paid or declined: a void invoice, another
    currency, an amount of zero or less."""
    if status == "void":
        raise Conflict("the invoice is void: it can no longer be paid")
    if currency != invoice_currency:
        raise Invalid(f"payment currency {currency} differs from the invoice's {invoice_currency}")
    if amount <= 0:
        raise Invalid("amount must be greater than zero")


def failure_check(*, status: str, invoice_currency: str, currency: str, amount: Decimal) -> None:
    """A declined charge is recorded only against an invoice that could still be paid."""
    charge_check(status=status, invoice_currency=invoice_currency, currency=currency, amount=amount)
    if status == "paid":
        raise Conflict("the invoice is already paid")


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
    charge_check(status=status, invoice_currency=invoice_currency, currency=currency, amount=amount)
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


# --------------------------------------------------------------------------- credit notes


@dataclass(frozen=True)
class CreditSplit:
    """How a credit note of ``amount`` lands: first it lowers what is still due, then the
    paid part goes back to the client as a refund or as credit on their balance."""

    reduces_due: Decimal
    refunded: Decimal
    credited: Decimal


def credit_check(*, status: str, invoice_currency: str, currency: str) -> None:
    """A credit note corrects a live invoice, in the invoice's own currency."""
    if status == "void":
        raise Conflict("the invoice is void: there is nothing to credit")
    if currency != invoice_currency:
        raise Invalid(f"credit note currency {currency} differs from the invoice's {invoice_currency}")


def split_credit(
    *, amount: Decimal, invoice_amount: Decimal, paid: Decimal, credited_before: Decimal, refund: bool
) -> CreditSplit:
    """Where a credit note of ``amount`` goes; refused when it is not positive cents or more
    than the invoice can still be credited."""
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    creditable = invoice_amount - credited_before
    if amount > creditable:
        raise Invalid(f"amount {amount} is more than the invoice can still be credited ({quantize(creditable)})")
    due = amount_open(invoice_amount, paid, credited_before)
    reduces = min(amount, due)
    rest = amount - reduces
    return CreditSplit(reduces_due=reduces, refunded=rest if refund else ZERO, credited=ZERO if refund else rest)

"""Project rules: what a milestone or final invoice may bill, and change orders (what may be
approved, rejected, and when out-of-scope work counts as leaked revenue)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from services.billing.domain.invoices import ZERO
from shared.errors import Conflict, Invalid
from shared.money import quantize


def remaining_to_invoice(*, total: Decimal, invoiced: Decimal) -> Decimal:
    """What of the signed estimate is still to invoice (never below zero)."""
    return max(quantize(total) - quantize(invoiced), ZERO)


def milestone_check(*, amount: Decimal, remaining: Decimal) -> None:
    """A milestone bills a positive amount in cents, never more than remains."""
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    if amount > remaining:
        raise Invalid(f"amount {amount} is more than what remains to invoice on the project ({remaining})")


def project_invoice_check(*, deal_kind: str, cleared: bool) -> None:
    """Milestones and final invoices are for projects, and only once work started (the deposit
    cleared)."""
    if deal_kind != "project":
        raise Conflict("a retainer is billed monthly; milestones and final invoices are for projects")
    if not cleared:
        raise Conflict("the deposit has not cleared: work has not started, so there is nothing to invoice yet")


def project_invoice_amount(*, kind: str, amount: Decimal | None, remaining: Decimal) -> Decimal:
    """What a milestone (its amount, within what remains) or the final invoice (the balance)
    bills."""
    if remaining <= 0:
        raise Conflict("the project is fully invoiced")
    if kind == "final":
        if amount is not None and amount != remaining:
            raise Invalid(f"the final invoice is the balance of the project ({remaining}); leave amount out")
        return remaining
    if amount is None:
        raise Invalid("a milestone needs its amount")
    milestone_check(amount=amount, remaining=remaining)
    return amount


# --------------------------------------------------------------------------- change orders


def approve_check(*, status: str, in_scope: bool, amount: Decimal) -> None:
    """Only a priced, out-of-scope change order still proposed may be approved (and invoiced)."""
    if in_scope:
        raise Conflict("an in-scope request is done at no charge: there is nothing to approve")
    if status == "rejected":
        raise Conflict("the change order was rejected")
    if amount <= 0:
        raise Conflict("the change order has no price: it cannot be invoiced")


def reject_check(*, status: str, in_scope: bool) -> None:
    """An invoiced change order is corrected by credit note, not rejected; in-scope work has no order."""
    if status == "invoiced":
        raise Conflict("the change order is invoiced: correct it with a credit note")
    if in_scope:
        raise Conflict("an in-scope request is not a change order")


def is_leaked(
    *,
    in_scope: bool,
    status: str,
    work_done_at: datetime | None,
    created_at: datetime,
    now: datetime,
    leak_after_days: int,
) -> bool:
    """Out-of-scope work that was never billed: delivered without an invoice, or left
    neither approved nor rejected for too long (the work usually went ahead anyway)."""
    if in_scope or status == "invoiced":
        return False
    if work_done_at is not None:
        return True
    return status == "proposed" and now - created_at >= timedelta(days=leak_after_days)

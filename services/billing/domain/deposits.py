"""Deposit rules: what is asked before work starts, and how its invoice line reads.

The deposit *share* is chosen where the deal is won (leads, by risk and tier) and travels in
``deal.won``; billing only applies it.
"""

from __future__ import annotations

from decimal import Decimal

from shared.errors import Invalid
from shared.money import quantize


def deposit_amount(*, kind: str, total: Decimal, monthly_fee: Decimal | None, deposit_share: Decimal) -> Decimal:
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

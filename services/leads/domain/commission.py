"""What a rep earns, from a commission plan set as data, and what they are measured against.

The plan pays shares of money that arrived, never of money promised: a share of each cleared
deposit of a deal the rep won, and a share of every other invoice their clients paid in the
first year after the deal was won. A monthly cap bounds one month's commission (the rep who
"demanded 70% of the profit" is paid by the plan, and the plan says how much at most). Each
month is rounded to the currency's minor unit (banker's rounding, as the rest of the books) and
then capped.

Pure: the caller gathers the payments; nothing here reads a clock or a database.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.money import Amount, CurrencyCode, in_currency, minor_units

FIRST_YEAR = timedelta(days=365)
ONE = Decimal(1)


class CommissionPlan(BaseModel):
    """The agency's plan (``PUT /team/commission-plan``): shares are fractions (0.1 = 10%)."""

    model_config = ConfigDict(extra="forbid")

    currency: CurrencyCode = Field(description="the currency commission is paid and capped in")
    deposit_share: Decimal = Field(ge=0, le=1, description="share of each cleared deposit of a deal the rep won")
    first_year_share: Decimal = Field(
        ge=0, le=1, description="share of the other invoices the rep's clients paid in their first year"
    )
    monthly_cap: Amount | None = Field(default=None, description="most one month's commission may be, or none")

    @model_validator(mode="after")
    def _shares(self) -> CommissionPlan:
        if self.deposit_share + self.first_year_share > ONE:
            raise ValueError("deposit_share and first_year_share together exceed 100%")
        in_currency(self.monthly_cap, self.currency)
        return self


class Quota(BaseModel):
    """A rep's target for one month, in won value (``PUT /team/quotas``)."""

    model_config = ConfigDict(extra="forbid")

    person_id: uuid.UUID
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")
    amount: Amount
    currency: CurrencyCode

    @model_validator(mode="after")
    def _decimals(self) -> Quota:
        in_currency(self.amount, self.currency)
        return self


@dataclass(frozen=True)
class Paid:
    """Money that arrived from one of the rep's clients."""

    kind: Literal["deposit", "invoice"]
    amount: Decimal
    currency: str
    paid_at: datetime
    won_at: datetime  # when the rep won the client's deal: the first year counts from here


@dataclass(frozen=True)
class Month:
    month: str
    deposits: Decimal
    first_year: Decimal
    earned: Decimal  # before the cap
    paid: Decimal  # after it


def month_of(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def commission(plan: CommissionPlan, payments: Iterable[Paid]) -> list[Month]:
    """The commission each month, in the plan's currency (payments in others are not counted
    here: the caller converts or leaves them out, and says so)."""
    deposits: dict[str, Decimal] = defaultdict(Decimal)
    first_year: dict[str, Decimal] = defaultdict(Decimal)
    for p in payments:
        if p.currency != plan.currency:
            continue
        month = month_of(p.paid_at)
        if p.kind == "deposit":
            deposits[month] += p.amount
        elif p.paid_at - p.won_at < FIRST_YEAR:
            first_year[month] += p.amount
    cents = Decimal(1).scaleb(-minor_units(plan.currency))
    months = []
    for month in sorted(set(deposits) | set(first_year)):
        earned = (deposits[month] * plan.deposit_share + first_year[month] * plan.first_year_share).quantize(
            cents, rounding=ROUND_HALF_EVEN
        )
        paid = min(earned, plan.monthly_cap) if plan.monthly_cap is not None else earned
        months.append(Month(month, deposits[month], first_year[month], earned, paid))
    return months


def attainment(won: Decimal, quota: Decimal | None) -> Decimal | None:
    """Won value as a share of quota (1 = met), or none without a quota."""
    if not quota:
        return None
    return (won / quota).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)

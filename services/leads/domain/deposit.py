"""How the deposit share is chosen: the one place that answers it.

When a deal is won (``deal.won``), leads decides the share of the first invoice the client
pays before any work starts; billing only applies it (to the project's total, or to a
retainer's first monthly fee). More risk asks a larger deposit:

- start from ``base_share`` (30%);
- add ``share_per_red_flag`` (10%) for each distinct red flag the lead carries;
- add ``low_fit_extra`` (10%) when the ICP fit is under ``low_fit_threshold`` (40);
- the client's tier, as retention last reviewed it: ``tolerable`` adds one more step
  (``share_per_red_flag``), ``best`` takes one off, ``fire`` asks ``max_share`` outright;
- the result is never under 10% nor over ``max_share`` (80%), rounded to whole percents.

The numbers are settings (``LEADS_DEPOSIT_*`` and ``LEADS_LOW_FIT_THRESHOLD``)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

# No deposit is smaller than this, however good the client: the work starts on money in the bank.
MIN_SHARE = Decimal("0.10")


def deposit_share(
    red_flags: Iterable[str],
    fit: int,
    *,
    base: Decimal,
    per_flag: Decimal,
    maximum: Decimal,
    low_fit_extra: Decimal,
    low_fit_threshold: int,
    tier: str | None = None,
) -> Decimal:
    """More risk asks a larger deposit: each red flag, a poor fit or a bad tier adds to it."""
    share = base + per_flag * len(set(red_flags))
    if fit < low_fit_threshold:
        share += low_fit_extra
    if tier == "fire":
        share = maximum
    elif tier == "tolerable":
        share += per_flag
    elif tier == "best":
        share -= per_flag
    return min(max(share, MIN_SHARE), maximum).quantize(Decimal("0.01"))


class DepositPolicy(BaseModel):
    """The deposit share's settings (see the module's docstring for how they combine)."""

    model_config = ConfigDict(frozen=True)

    base_share: Decimal = Field(default=Decimal("0.30"), ge=0, le=1)
    share_per_red_flag: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    max_share: Decimal = Field(default=Decimal("0.80"), ge=0, le=1)
    low_fit_extra: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    low_fit_threshold: int = Field(default=40, ge=0, le=100)

    def share(self, red_flags: Iterable[str], *, fit: int, tier: str | None) -> Decimal:
        """The share a lead with these red flags, fit and tier is asked at signature."""
        return deposit_share(
            red_flags,
            fit,
            base=self.base_share,
            per_flag=self.share_per_red_flag,
            maximum=self.max_share,
            low_fit_extra=self.low_fit_extra,
            low_fit_threshold=self.low_fit_threshold,
            tier=tier,
        )

"""What a client who asks to cancel is offered first (docs/design.md, "Business rules": a pause
at a low fee, or a discount). The numbers are ``OfferPolicy``'s (``RETENTION_PAUSE_*``,
``RETENTION_DISCOUNT_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import quantize

CANCELLATION_REASONS = (
    "price",
    "budget_cut",
    "not_using",
    "poor_results",
    "switching_provider",
    "project_done",
    "other",
)
CANCELLATION_STATUSES = ("requested", "saved", "completed")
OFFER_KINDS = ("pause", "discount", "none")

_HUNDRED = Decimal(100)


class OfferPolicy(BaseModel):
    """The save offers: a pause at a share of the fee, or a discount for some months."""

    model_config = ConfigDict(frozen=True)

    pause_fee_share: Decimal = Field(default=Decimal("0.2"), ge=0, le=1, description="share of the fee while paused")
    pause_months: int = Field(default=2, ge=1)
    discount_percent: Decimal = Field(default=Decimal("20"), gt=0, lt=100)
    discount_months: int = Field(default=3, ge=1)


@dataclass(frozen=True)
class Offer:
    """A save offer: a pause or a discount at a fee for some months, or none (and why)."""

    kind: str  # pause | discount | none
    fee: Decimal | None = None
    discount_percent: Decimal | None = None
    months: int | None = None
    currency: str | None = None
    description: str = ""


def choose_offer(
    *,
    tier: str | None,
    band: str | None,
    reason: str,
    monthly_fee: Decimal | None,
    currency: str | None,
    policy: OfferPolicy,
) -> Offer:
    """The save offer for a client who asks to cancel.

    ``fire`` clients cost more than they bring: we let them go. A ``tolerable`` client in the
    red band is the same bet, so it is not bought back either. Price complaints get a
    discount; every other reason gets a pause at a low fee (a pause is not churn)."""
    if reason not in CANCELLATION_REASONS:
        raise ValueError(f"unknown cancellation reason {reason!r}")
    if tier == "fire":
        return Offer("none", description="no save offer: the client is in the fire tier")
    if tier == "tolerable" and band == "red":
        return Offer("none", description="no save offer: a tolerable client in poor health")
    fee = monthly_fee or Decimal(0)
    if reason == "price":
        discounted = quantize(fee * (_HUNDRED - policy.discount_percent) / _HUNDRED)
        return Offer(
            "discount",
            fee=discounted,
            discount_percent=policy.discount_percent,
            months=policy.discount_months,
            currency=currency,
            description=(
                f"{format(policy.discount_percent.normalize(), 'f')}% off for {policy.discount_months} months:"
                f" {discounted} {currency or ''} a month".rstrip()
            ),
        )
    paused = quantize(fee * policy.pause_fee_share)
    return Offer(
        "pause",
        fee=paused,
        months=policy.pause_months,
        currency=currency,
        description=f"pause for {policy.pause_months} months at {paused} {currency or ''} a month".rstrip(),
    )


# The offer a cancellation billing ended (dunning gave up) is recorded with: there was none.
ENDED_BY_BILLING = Offer("none", description="ended by billing")

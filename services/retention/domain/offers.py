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
OFFER_KINDS = ("pause", "discount", "downgrade", "none")

_HUNDRED = Decimal(100)


class OfferPolicy(BaseModel):
    """The save offers: a pause at a share of the fee, or a discount for some months."""

    model_config = ConfigDict(frozen=True)

    pause_fee_share: Decimal = Field(default=Decimal("0.2"), ge=0, le=1, description="share of the fee while paused")
    pause_months: int = Field(default=2, ge=1, le=24)
    discount_percent: Decimal = Field(default=Decimal("20"), gt=0, lt=100)
    discount_months: int = Field(default=3, ge=1, le=24)
    downgrade_fee_share: Decimal = Field(
        default=Decimal("0.6"), gt=0, lt=1, description="share of the fee on the smaller plan"
    )
    downgrade_hours_share: Decimal = Field(
        default=Decimal("0.5"), gt=0, lt=1, description="share of the included hours on the smaller plan"
    )
    downgrade_months: int = Field(default=3, ge=1, le=24)


@dataclass(frozen=True)
class Offer:
    """A save offer: a pause or a discount at a fee for some months, or none (and why)."""

    kind: str  # pause | discount | none
    fee: Decimal | None = None
    discount_percent: Decimal | None = None
    months: int | None = None
    currency: str | None = None
    description: str = ""
    included_hours: Decimal | None = None


def choose_offer(
    *,
    tier: str | None,
    band: str | None,
    reason: str,
    monthly_fee: Decimal | None,
    currency: str | None,
    policy: OfferPolicy,
    included_hours: Decimal | None = None,
) -> Offer:
    """The save offer for a client who asks to cancel.

    ``fire`` clients cost more than they bring: we let them go. A ``tolerable`` client in the
    red band is the same bet, so it is not bought back either. Price complaints get a
    discount; a client who is not using what they pay for gets a smaller plan for some months
    (a downgrade: a share of the fee for a share of the hours); every other reason gets a pause
    at a low fee (a pause is not churn)."""
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
    if reason == "not_using" and fee > 0:
        smaller = quantize(fee * policy.downgrade_fee_share)
        hours = quantize(included_hours * policy.downgrade_hours_share) if included_hours else None
        plan = f"{format(hours.normalize(), 'f')} hours included" if hours is not None else "a smaller plan"
        return Offer(
            "downgrade",
            fee=smaller,
            months=policy.downgrade_months,
            currency=currency,
            included_hours=hours,
            description=(
                f"smaller plan for {policy.downgrade_months} months: {smaller} {currency or ''} a month, {plan}"
            ).replace("  ", " "),
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


def tailored_offer(
    *,
    kind: str,
    monthly_fee: Decimal | None,
    currency: str | None,
    discount_percent: Decimal | None,
    fee: Decimal | None,
    months: int | None,
    included_hours: Decimal | None,
) -> Offer:
    """An offer a person tailored for one client (the account manager's counter-offer): a
    discount by percent (over 0, at most 100), a downgrade or a pause at a fee, for 1 to 24
    months. ``ValueError`` names the field that is wrong."""
    base = monthly_fee or Decimal(0)
    if kind not in ("pause", "discount", "downgrade"):
        raise ValueError(f"kind: {kind!r} is not an offer (pause, discount or downgrade)")
    if months is None or not 1 <= months <= 24:
        raise ValueError(f"months: an offer runs 1 to 24 months, not {months}")
    if kind == "discount":
        if discount_percent is None or not Decimal(0) < discount_percent <= _HUNDRED:
            raise ValueError(f"discount_percent: {discount_percent} is not a discount (over 0, at most 100)")
        price = quantize(base * (_HUNDRED - discount_percent) / _HUNDRED)
        text = f"{format(discount_percent.normalize(), 'f')}% off for {months} months: {price} {currency or ''} a month"
        return Offer("discount", price, discount_percent, months, currency, text.rstrip())
    if fee is None or fee < 0 or fee >= base:
        raise ValueError(f"fee: a {kind} names a monthly fee below the current {quantize(base)}, not {fee}")
    price = quantize(fee)
    if kind == "pause":
        return Offer(
            "pause",
            price,
            None,
            months,
            currency,
            f"pause for {months} months at {price} {currency or ''} a month".rstrip(),
        )
    hours_text = f", {format(included_hours.normalize(), 'f')} hours included" if included_hours is not None else ""
    return Offer(
        "downgrade",
        price,
        None,
        months,
        currency,
        f"smaller plan for {months} months: {price} {currency or ''} a month{hours_text}".replace("  ", " "),
        included_hours,
    )

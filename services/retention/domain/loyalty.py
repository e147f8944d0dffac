"""How loyalty points are earned (``RETENTION_LOYALTY_*``, ``RETENTION_REFERRAL_BONUS_POINTS``):
a fully paid invoice earns points per currency unit once its refund window has passed with no
void or refund; a referral that becomes a client earns a bonus."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class LoyaltyPolicy(BaseModel):
    """Points per currency unit paid, the refund window they wait for, the referral bonus."""

    model_config = ConfigDict(frozen=True)

    refund_window_days: int = Field(
        default=14,
        ge=0,
        validation_alias=AliasChoices("refund_window_days", "loyalty_refund_window_days"),
        description="days a paid invoice waits for its points (a refund inside them cancels them)",
    )
    points_per_unit: Decimal = Field(
        default=Decimal("0.1"),
        ge=0,
        validation_alias=AliasChoices("points_per_unit", "loyalty_points_per_unit"),
        description="points per currency unit paid",
    )
    referral_bonus_points: int = Field(default=500, ge=0, description="points for a referral that became a client")

    @property
    def refund_window(self) -> timedelta:
        return timedelta(days=self.refund_window_days)


def loyalty_points(amount: Decimal, per_unit: Decimal) -> int:
    """Points for a paid invoice: ``per_unit`` points per currency unit, rounded down."""
    return max(0, int((amount * per_unit).to_integral_value(rounding=ROUND_FLOOR)))

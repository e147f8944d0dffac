from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "retention"
    default_port: ClassVar[int] = 8004

    # Health score: weights of each factor (relative; they need not sum to 100).
    health_weight_punctuality: int = Field(default=30, ge=0)
    health_weight_failures: int = Field(default=15, ge=0)
    health_weight_complaints: int = Field(default=20, ge=0)
    health_weight_engagement: int = Field(default=10, ge=0)
    health_weight_tenure: int = Field(default=15, ge=0)
    health_weight_scope: int = Field(default=10, ge=0)
    health_scope_penalty: int = Field(default=10, ge=0, le=100, description="points lost per out-of-scope request")
    engagement_window_days: int = Field(default=30, ge=1, description="recent window of opens, clicks, complaints")
    trend_days: int = Field(default=30, ge=1, description="the health trend compares with the score this long ago")
    health_failure_penalty: int = Field(default=25, ge=0, le=100, description="points lost per failed payment")
    health_complaint_penalty: int = Field(default=25, ge=0, le=100, description="points lost per complaint")
    health_engagement_placeholder: int = Field(
        default=50, ge=0, le=100, description="engagement value until engagement events are scored"
    )
    health_tenure_full_days: int = Field(default=365, ge=1, description="days as a client for full tenure marks")
    band_yellow_from: int = Field(default=51, ge=1, le=100)
    band_green_from: int = Field(default=76, ge=1, le=100)

    # Save offers made to a client who asks to cancel.
    pause_fee_share: Decimal = Field(default=Decimal("0.2"), ge=0, le=1)
    pause_months: int = Field(default=2, ge=1)
    discount_percent: Decimal = Field(default=Decimal("20"), gt=0, lt=100)
    discount_months: int = Field(default=3, ge=1)

    # Tiers (DESIGN.md) and their scheduled review.
    tier_review_every: Literal["monthly", "quarterly"] = "monthly"
    tier_best_min_revenue: Decimal = Field(default=Decimal("10000"), ge=0)
    tier_fire_late_payments: int = Field(default=3, ge=1)
    tier_fire_out_of_scope: int = Field(default=3, ge=1)
    tier_fire_complaints: int = Field(default=2, ge=1)
    tier_fire_failures: int = Field(default=3, ge=1)

    # Churn-risk rules.
    risk_late_payments: int = Field(default=2, ge=1, description="late payments in 90 days")
    risk_engagement_drop_share: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    risk_engagement_min_before: int = Field(default=2, ge=1)
    risk_underused_share: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    risk_price_notice_days: int = Field(default=30, ge=1)

    # Loyalty and referrals.
    loyalty_refund_window_days: int = Field(default=14, ge=0)
    loyalty_points_per_unit: Decimal = Field(default=Decimal("0.1"), ge=0, description="points per currency unit paid")
    referral_bonus_points: int = Field(default=500, ge=0)

    # Economics.
    gross_margin: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    reporting_currency: str = Field(default="EUR", min_length=3, max_length=3)

    # Health is re-assessed on a schedule too: tenure grows with time, not with events.
    review_interval_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if sum(self.health_weights.values()) <= 0:
            raise ValueError("at least one health weight must be positive")
        if self.band_yellow_from >= self.band_green_from:
            raise ValueError("band_yellow_from must be below band_green_from")
        return self

    @property
    def health_weights(self) -> dict[str, int]:
        return {
            "punctuality": self.health_weight_punctuality,
            "failures": self.health_weight_failures,
            "complaints": self.health_weight_complaints,
            "engagement": self.health_weight_engagement,
            "tenure": self.health_weight_tenure,
            "scope": self.health_weight_scope,
        }

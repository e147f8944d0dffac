from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.billing.domain import Ladder
from shared.settings import ServiceSettings

DEV_WEBHOOK_SECRET = "dev-webhook-secret-change-me"

# Declines a retry cannot fix (Stripe's "do not retry" list): the client must act.
HARD_DECLINES = (
    "stolen_card",
    "lost_card",
    "pickup_card",
    "fraudulent",
    "restricted_card",
    "invalid_account",
    "card_not_supported",
    "currency_not_supported",
    "do_not_honor",
    "revocation_of_authorization",
    "security_violation",
    "invalid_number",
)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "billing"
    default_port: ClassVar[int] = 8003

    deposit_due_days: int = Field(default=7, ge=0, description="days a deposit invoice is due after issue")
    invoice_due_days: int = Field(
        default=14, ge=0, description="days a retainer, milestone, final or change-order invoice is due after issue"
    )
    calendar_months: bool = Field(
        default=True,
        description="retainer periods run from the 1st of each month (the first one prorated); false: monthly from the start day",
    )
    # Dunning (Kill Bill's overdue ladder, Stripe's smart-retry defaults).
    retry_schedule_days: list[int] = Field(default=[1, 3, 5, 7], description="days after the first failure to retry a card")
    hard_decline_codes: list[str] = Field(default=list(HARD_DECLINES))
    grace_decline_codes: list[str] = Field(default=["expired_card"], description="declines that start a grace period")
    grace_days: int = Field(default=14, ge=0, description="grace with service kept after an expired card")
    warning_days: int = Field(default=10, ge=0)
    blocked_days: int = Field(default=14, ge=0)
    cancelled_days: int = Field(default=21, ge=0)
    best_extra_days: int = Field(default=7, ge=0, description="extra days at every dunning step for a `best` client")
    # Webhooks from the payment provider.
    webhook_secret: SecretStr = Field(default=SecretStr(DEV_WEBHOOK_SECRET))
    webhook_tolerance_s: int = Field(default=300, ge=1, description="oldest (or most future) signed timestamp accepted")
    # Price changes and change orders.
    price_notice_days: list[int] = Field(default=[30, 7])
    leak_after_days: int = Field(
        default=30, ge=1, description="an out-of-scope change order neither approved nor rejected after this is leaked"
    )
    cycle_interval_s: float = Field(default=60.0, gt=0, description="how often the billing cycle (invoices, dunning) runs")
    report_interval_s: float = Field(default=30.0, gt=0, description="how often gauges (MRR, DSO...) are recomputed")

    @model_validator(mode="after")
    def _billing(self) -> "Settings":
        if not self.warning_days <= self.blocked_days <= self.cancelled_days:
            raise ValueError("dunning days must rise: warning <= blocked <= cancelled")
        if self.environment == "production" and self.webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
            raise ValueError("BILLING_WEBHOOK_SECRET must be set outside development")
        return self

    @property
    def ladder(self) -> Ladder:
        return Ladder(
            warning_days=self.warning_days,
            blocked_days=self.blocked_days,
            cancelled_days=self.cancelled_days,
            retry_days=tuple(self.retry_schedule_days),
            grace_days=self.grace_days,
            best_extra_days=self.best_extra_days,
        )

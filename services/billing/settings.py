"""Billing's settings: ``BILLING_``-prefixed, with the dunning ladder as a nested policy."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.billing.domain import Ladder
from services.billing.domain.dunning import DEFAULT_TIER_OVERRIDES, LadderOverrides
from shared.settings import ServiceSettings

DEV_WEBHOOK_SECRET = "dev-webhook-secret-change-me"


class DunningPolicy(BaseSettings, Ladder):
    """The dunning ladder the rules take (``domain.Ladder``), read from the same flat names as
    ever: ``BILLING_WARNING_DAYS``, ``BILLING_BLOCKED_DAYS``, ``BILLING_CANCELLED_DAYS``,
    ``BILLING_RETRY_SCHEDULE_DAYS``, ``BILLING_GRACE_DAYS``, ``BILLING_BEST_EXTRA_DAYS``,
    ``BILLING_HARD_DECLINE_CODES``, ``BILLING_GRACE_DECLINE_CODES`` (``good``'s ladder), and
    each tier's overrides of it as JSON in ``BILLING_DUNNING_TIERS``, merged over the defaults
    field by field, e.g. ``{"tolerable": {"warning_days": 5}, "fire": {"cancelled_days": 10}}``.
    Steps out of order refuse to start, naming the field.

    A settings class of its own with billing's prefix rather than a nested model read through
    ``env_nested_delimiter``: that would rename them ``BILLING_DUNNING__WARNING_DAYS``."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", frozen=True)

    # An alias is read as the whole variable's name (the prefix is not added): BILLING_TIERS
    # would not say what the tiers are for.
    tiers: dict[str, LadderOverrides] = Field(
        default_factory=lambda: {t: LadderOverrides(**o) for t, o in DEFAULT_TIER_OVERRIDES.items()},
        validation_alias=AliasChoices("tiers", "BILLING_DUNNING_TIERS"),
        description="each tier's overrides of the ladder (JSON), merged over the defaults field by field",
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
    # Dunning (Kill Bill's overdue ladder, Stripe's smart-retry defaults): see domain/dunning.py.
    dunning: DunningPolicy = Field(default_factory=DunningPolicy)
    # Webhooks from the payment provider.
    webhook_secret: SecretStr = Field(default=SecretStr(DEV_WEBHOOK_SECRET))
    webhook_tolerance_s: int = Field(default=300, ge=1, description="oldest (or most future) signed timestamp accepted")
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="the signing secret (whsec_...) of Stripe's webhook endpoint; unset: POST /payments/stripe answers 503",
    )
    # Price changes, change orders and reports.
    price_notice_days: list[int] = Field(default=[30, 7])
    leak_after_days: int = Field(
        default=30, ge=1, description="an out-of-scope change order neither approved nor rejected after this is leaked"
    )
    dso_days: int = Field(
        default=90, ge=1, description="days sales outstanding: receivables / invoiced in the last dso_days x dso_days"
    )
    cycle_interval_s: float = Field(
        default=60.0, gt=0, description="how often the billing cycle (invoices, dunning) runs"
    )
    report_interval_s: float = Field(default=30.0, gt=0, description="how often gauges (MRR, DSO...) are recomputed")

    @model_validator(mode="after")
    def _billing(self) -> Settings:
        if self.environment == "production" and self.webhook_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
            raise ValueError("BILLING_WEBHOOK_SECRET must be set outside development")
        return self

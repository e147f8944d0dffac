"""Retention's settings: ``RETENTION_``-prefixed, plus the shared names of ``shared.settings``.

The rules' numbers (docs/design.md, "Business rules": where the numbers are defaults, they are
settings, not constants in code) are nested policies, the very objects the rules take:
``settings.health`` is a ``domain.HealthPolicy``, ``settings.risk`` a ``domain.RiskPolicy``...
Each of their settings keeps the flat name it always had, in the environment
(``RETENTION_HEALTH_WEIGHT_TENURE``, ``RETENTION_BAND_GREEN_FROM``) and as a keyword
(``Settings(health_weight_tenure=0)``); a whole policy may be given too
(``RETENTION_HEALTH='{"trend_days": 14}'`` or ``Settings(health=HealthPolicy(...))``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from services.retention.domain import (
    EconomicsPolicy,
    HealthPolicy,
    LoyaltyPolicy,
    OfferPolicy,
    RiskPolicy,
    TierPolicy,
)
from shared.settings import ServiceSettings

# The nested policies, by field name.
POLICIES = ("health", "risk", "tiers", "offers", "loyalty", "economics")


class FlatNames(PydanticBaseSettingsSource):
    """The policies' settings by their flat names: every policy is offered them all and keeps
    its own (a policy field names its flat name as an alias: ``HealthPolicy.yellow_from`` is
    also ``band_yellow_from``). Names of ``Settings``' own fields are not offered."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = {k: v for k, v in values.items() if k not in settings_cls.model_fields and v is not None}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # whole policies only (see __call__)

    def __call__(self) -> dict[str, Any]:
        return {name: dict(self.values) for name in POLICIES} if self.values else {}


class Settings(ServiceSettings):
    """``RETENTION_``-prefixed settings; the rules' policies nested (see the module's docstring)."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "retention"
    default_port: ClassVar[int] = 8004

    health: HealthPolicy = Field(default_factory=HealthPolicy, description="the health score (domain/health.py)")
    risk: RiskPolicy = Field(default_factory=RiskPolicy, description="the churn-risk rules (domain/churn_risk.py)")
    tiers: TierPolicy = Field(default_factory=TierPolicy, description="tiers and their review (domain/tiers.py)")
    offers: OfferPolicy = Field(default_factory=OfferPolicy, description="save offers (domain/offers.py)")
    loyalty: LoyaltyPolicy = Field(
        default_factory=LoyaltyPolicy, description="points and referrals (domain/loyalty.py)"
    )
    economics: EconomicsPolicy = Field(
        default_factory=EconomicsPolicy, description="unit economics (domain/economics.py)"
    )

    # The agency ending a relationship: the notice given when the request names none.
    termination_notice_days: int = Field(
        default=30, ge=0, le=365, description="default notice of POST /clients/{lead_id}/termination, in days"
    )

    # Health is re-assessed on a schedule too: tenure grows with time, not with events.
    review_interval_s: float = Field(default=600.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flat keywords rank with the keywords, flat variables with the variables."""
        assert isinstance(init_settings, InitSettingsSource) and isinstance(env_settings, EnvSettingsSource)
        prefix = env_settings.env_prefix.lower()
        variables = {
            name[len(prefix) :]: value
            for name, value in env_settings.env_vars.items()
            if name.lower().startswith(prefix)
        }
        return (
            init_settings,
            FlatNames(settings_cls, init_settings.init_kwargs),
            env_settings,
            FlatNames(settings_cls, variables),
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def health_weights(self) -> dict[str, int]:
        """The health factors' weights (``RETENTION_HEALTH_WEIGHT_<FACTOR>``)."""
        return dict(self.health.weights)

from decimal import Decimal
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEADS_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "leads"
    default_port: ClassVar[int] = 8001

    deposit_base_share: Decimal = Field(default=Decimal("0.30"), ge=0, le=1)
    deposit_share_per_red_flag: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    deposit_max_share: Decimal = Field(default=Decimal("0.80"), ge=0, le=1)
    deposit_low_fit_extra: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    low_fit_threshold: int = Field(default=40, ge=0, le=100)

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "billing"
    default_port: ClassVar[int] = 8003

    deposit_due_days: int = Field(default=7, ge=0, description="days a deposit invoice is due after issue")

from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEFAULT_ICP_FILE = Path(__file__).parent / "icp.yaml"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEADS_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "leads"
    default_port: ClassVar[int] = 8001

    # Deposit share asked at signature: base, plus per red flag and for a poor fit, capped.
    deposit_base_share: Decimal = Field(default=Decimal("0.30"), ge=0, le=1)
    deposit_share_per_red_flag: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    deposit_max_share: Decimal = Field(default=Decimal("0.80"), ge=0, le=1)
    deposit_low_fit_extra: Decimal = Field(default=Decimal("0.10"), ge=0, le=1)
    low_fit_threshold: int = Field(default=40, ge=0, le=100)

    # The ICP a fresh database starts from (PUT /icp replaces it; versions are kept in the database).
    icp_file: Path = DEFAULT_ICP_FILE

    # BANT: how many of the four must hold (need always must); the budget that counts as one.
    qualification_required: int = Field(default=3, ge=1, le=4)
    qualification_minimum_budget: Decimal = Field(default=Decimal("1000"), ge=0)

    # Engagement points per signal and how fast they fade (half gone after the half-life).
    engagement_half_life_days: float = Field(default=14.0, gt=0)
    engagement_open_points: Decimal = Field(default=Decimal("5"), ge=0)
    engagement_click_points: Decimal = Field(default=Decimal("10"), ge=0)
    engagement_reply_points: Decimal = Field(default=Decimal("25"), ge=0)
    engagement_feedback_points: Decimal = Field(default=Decimal("10"), ge=0)
    engagement_takeover_points: Decimal = Field(default=Decimal("15"), ge=0)

    # Change requests on one deal from which the client "changes mind often".
    changes_mind_after: int = Field(default=3, ge=1)
    import_max_rows: int = Field(default=5000, ge=1)

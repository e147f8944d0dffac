"""Leads' settings: ``LEADS_``-prefixed, with the business rules' numbers as nested policies.

A policy reads its fields from ``LEADS_<POLICY>_<FIELD>`` (``env_nested_delimiter`` "_", split
once): ``LEADS_DEPOSIT_BASE_SHARE`` is ``deposit.base_share``, ``LEADS_ENGAGEMENT_HALF_LIFE_DAYS``
is ``engagement.half_life_days``, ``LEADS_QUALIFICATION_REQUIRED`` is ``qualification.required``:
the names these settings had before they were nested."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.leads.domain import DepositPolicy, EngagementPolicy, QualificationPolicy
from services.leads.domain.assignment import SalesPolicy
from services.leads.domain.estimates import EstimatePolicy
from shared.settings import ServiceSettings

DEFAULT_ICP_FILE = Path(__file__).parent / "icp.yaml"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEADS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        populate_by_name=True,
    )
    service_name: ClassVar[str] = "leads"
    default_port: ClassVar[int] = 8001

    # The deposit share asked at signature (LEADS_DEPOSIT_BASE_SHARE, LEADS_DEPOSIT_SHARE_PER_RED_FLAG,
    # LEADS_DEPOSIT_MAX_SHARE, LEADS_DEPOSIT_LOW_FIT_EXTRA).
    deposit: DepositPolicy = Field(default_factory=DepositPolicy)
    # LEADS_LOW_FIT_THRESHOLD: the fit under which the deposit asks more. Its name predates the
    # nested policy (and does not start with LEADS_DEPOSIT_), so it is read here and handed to it.
    low_fit_threshold: int | None = Field(default=None, ge=0, le=100, exclude=True)

    # BANT (LEADS_QUALIFICATION_REQUIRED, LEADS_QUALIFICATION_MINIMUM_BUDGET).
    qualification: QualificationPolicy = Field(default_factory=QualificationPolicy)

    # Engagement points per signal and their half-life (LEADS_ENGAGEMENT_HALF_LIFE_DAYS,
    # LEADS_ENGAGEMENT_OPEN_POINTS, _CLICK_POINTS, _REPLY_POINTS, _FEEDBACK_POINTS, _TAKEOVER_POINTS).
    engagement: EngagementPolicy = Field(default_factory=EngagementPolicy)

    # Speed to lead and the sales clock (LEADS_SALES_FIRST_TOUCH_HOURS, LEADS_SALES_WORKDAY_START,
    # LEADS_SALES_WORKDAYS='[6,0,1,2,3]', LEADS_SALES_TENDER_REMINDER_HOURS...).
    sales: SalesPolicy = Field(default_factory=SalesPolicy)
    # The currencies the agency sells in (LEADS_CURRENCIES='["EUR","USD"]'): quotas and the
    # commission plan must use one of them.
    currencies: tuple[str, ...] = ("EUR", "USD", "GBP")

    # Estimates the client signs: how long one may be accepted (LEADS_ESTIMATE_VALID_DAYS), and
    # the base of the public acceptance links (LEADS_PUBLIC_URL, as NURTURE_PUBLIC_URL for nurture's).
    estimate: EstimatePolicy = Field(default_factory=EstimatePolicy)
    public_url: str = Field(default="http://127.0.0.1:8001", description="base of public links (estimate acceptance)")

    # A client the agency let go who comes back: every estimate is multiplied by this
    # (LEADS_RETURNING_SURCHARGE, 2 to 10; refused at start-up otherwise).
    returning_surcharge: Decimal = Field(
        default=Decimal(3), ge=2, le=10, description="estimate multiplier for a returning terminated client"
    )

    # Retention of data (services/leads/data_retention.py): a person disqualified, or whose every
    # deal was lost without ever becoming a client, is erased this many days after it (counted
    # from their last contact when they wrote again since). A year for the disqualified (a new
    # budget often brings them back within one), two for the lost (a proposal declined is
    # often reopened in the next year's budget). 1 to 3650; refused at start-up otherwise.
    disqualified_retention_days: int = Field(
        default=365, ge=1, le=3650, description="days a disqualified lead is kept before it is erased"
    )
    lost_retention_days: int = Field(
        default=730, ge=1, le=3650, description="days a lead whose every deal was lost is kept before it is erased"
    )

    # Exports on request (exports.py): how long a gathered export is kept for its download
    # (LEADS_EXPORT_RETENTION_DAYS); it holds a whole person, so not for long.
    export_retention_days: int = Field(
        default=7, ge=1, le=90, description="days an export of a person's data is kept for download"
    )

    # The ICP a fresh database starts from (PUT /icp replaces it; versions are kept in the database).
    icp_file: Path = DEFAULT_ICP_FILE

    # Change requests on one deal from which the client "changes mind often".
    changes_mind_after: int = Field(default=3, ge=1)
    import_max_rows: int = Field(default=5000, ge=1)
    # The share of the time a CSV import works (LEADS_IMPORT_DUTY_CYCLE): after each chunk it
    # pauses so that requests, consumers and the services its new leads keep busy get the rest.
    import_duty_cycle: float = Field(default=0.3, gt=0, le=1)

    @model_validator(mode="after")
    def _low_fit_threshold_into_deposit(self) -> Settings:
        if self.low_fit_threshold is not None:
            self.deposit = self.deposit.model_copy(update={"low_fit_threshold": self.low_fit_threshold})
        return self

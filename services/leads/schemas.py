"""Leads' HTTP response bodies and the small request bodies routes unpack (JSON names fixed by
docs/design.md, "HTTP surface"). The commands use cases take (``LeadIn``, ``DealIn``...) live in
``commands.py`` and are re-exported here, being request bodies too."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from services.leads.commands import (
    ChangeRequestIn,
    DealIn,
    LeadIn,
    QualificationIn,
    RevisionIn,
    ScopeLineIn,
    SpendIn,
)
from services.leads.domain import RED_FLAGS, STAGES
from shared.bounds import Moment
from shared.money import DecimalStr

__all__ = [
    "ActivityEntry",
    "ChangeRequestIn",
    "ChangeRequestOut",
    "ConversionStep",
    "DealIn",
    "DealOut",
    "ErasedOut",
    "FunnelOut",
    "FunnelSlice",
    "IcpOut",
    "ImportReportOut",
    "ImportRowError",
    "LeadCreated",
    "LeadIn",
    "LeadList",
    "LeadOut",
    "LostIn",
    "MergeIn",
    "PeriodSlice",
    "QualificationIn",
    "QualificationOut",
    "RedFlagIn",
    "RevisionIn",
    "ScopeLineIn",
    "SpendIn",
    "SpendOut",
    "StageEntry",
    "StageIn",
    "TouchOut",
    "VersionOut",
    "WonIn",
]


class LeadCreated(BaseModel):
    lead_id: uuid.UUID
    fit_score: int
    red_flags: list[str]
    stage: str
    duplicate: bool = False
    matched_by: Literal["email", "company_domain"] | None = Field(
        default=None, description="for a duplicate: what matched the existing lead"
    )


class StageEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from its row

    from_stage: str | None
    to_stage: str
    cause: str
    at: datetime


class ActivityEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from its row

    type: str = Field(examples=["email.clicked"])
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class TouchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from its row

    channel: str
    campaign: str | None
    utm: dict[str, str] | None
    matched_by: str | None
    contact_name: str | None
    contact_email: str | None
    at: datetime


class LeadOut(BaseModel):
    lead_id: uuid.UUID
    name: str | None
    email: str | None
    company: str | None
    channel: str
    stage: str
    fit_score: int
    fit_matched: list[str]
    fit_missed: list[str]
    engagement_score: int = Field(description="0-100, decayed to now; kept apart from fit")
    red_flags: list[dict[str, Any]] = Field(description="name, evidence, source, at")
    tier: str | None
    created_at: datetime
    erased: bool
    timeline: list[StageEntry] = Field(default_factory=list, description="stage history, oldest first")
    job_title: str | None = None
    industry: str | None = None
    employees: int | None = None
    annual_revenue: DecimalStr | None = None
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    campaign: str | None = None
    utm: dict[str, str] = Field(default_factory=dict)
    budget: DecimalStr | None = None
    currency: str | None = None
    brief: str | None = None
    timeline_text: str | None = Field(default=None, description="the timeline the lead gave (text)")
    needs: list[str] = Field(default_factory=list)
    consent_marketing: bool = False
    legal_basis: str | None = None
    referred_by: uuid.UUID | None = None
    referrals: int = 0
    surcharge: DecimalStr | None = Field(
        default=None, description="a client the agency once let go: every estimate is multiplied by this"
    )
    tier_reasons: list[str] = Field(default_factory=list)
    qualification: dict[str, Any] | None = None
    merged_into: uuid.UUID | None = None
    updated_at: datetime | None = None
    erased_at: datetime | None = None
    touches: list[TouchOut] = Field(default_factory=list)
    activity: list[ActivityEntry] = Field(
        default_factory=list, description="every event about the lead, oldest first (its full timeline)"
    )
    deals: list[uuid.UUID] = Field(default_factory=list)
    owner_id: uuid.UUID | None = Field(default=None, description="the person handling the lead, or null (the pool)")
    assigned_at: datetime | None = None
    account_owner_id: uuid.UUID | None = Field(default=None, description="once a client: who looks after them")
    first_touch_due_at: datetime | None = Field(default=None, description="when someone must have reached the lead")
    first_touched_at: datetime | None = Field(default=None, description="the first call, meeting or e-mail logged")
    account_id: uuid.UUID | None = Field(
        default=None, description="the company account the person belongs to (GET /accounts/{account_id})"
    )


class AccountDeal(BaseModel):
    """One deal of one of the account's people."""

    deal_id: uuid.UUID = Field(validation_alias=AliasChoices("deal_id", "id"))
    title: str
    kind: str
    status: str = Field(description="proposed, won, lost, written_off...")
    currency: str
    total: DecimalStr
    monthly_fee: DecimalStr | None = None


class AccountPerson(BaseModel):
    """One person of the account, with their stage and deals."""

    lead_id: uuid.UUID
    name: str | None
    email: str | None
    job_title: str | None
    stage: str
    tier: str | None
    owner_id: uuid.UUID | None
    created_at: datetime
    deals: list[AccountDeal] = Field(default_factory=list)


class AccountOut(BaseModel):
    """A company account: the people at one work domain with one company name (linked, never merged)."""

    account_id: uuid.UUID
    name: str
    domain: str
    created_at: datetime
    people: list[AccountPerson] = Field(description="its people (leads), oldest first, erased ones left out")
    stages: dict[str, int] = Field(description="how many of its people are at each funnel stage")


class LeadList(BaseModel):
    items: list[LeadOut]
    total: int
    limit: int
    offset: int


class DealOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from its row (``id`` is ``deal_id``)

    deal_id: uuid.UUID = Field(validation_alias=AliasChoices("deal_id", "id"))
    lead_id: uuid.UUID
    title: str
    kind: str
    status: str
    currency: str
    total: DecimalStr
    monthly_fee: DecimalStr | None
    included_hours: DecimalStr | None
    hourly_rate: DecimalStr | None
    lines: list[dict[str, Any]]
    signed_by: str | None
    signed_at: datetime | None
    deposit_share: DecimalStr | None
    lost_reason: str | None
    change_requests: list[ChangeRequestOut] = Field(default_factory=list)
    owner_id: uuid.UUID | None = Field(default=None, description="the rep who proposed it (won value and commission)")
    submission_deadline: datetime | None = Field(default=None, description="a tender's deadline")
    version: int = Field(default=1, description="the estimate's version: 1 at first, one more per revision")
    digest: str | None = Field(default=None, description="SHA-256 of the latest version's canonical content")
    valid_until: datetime | None = Field(default=None, description="until when the client may accept it")
    acceptance_url: str | None = Field(
        default=None,
        description="signed public link where the client reads the estimate and accepts it (form field name)",
    )
    signed_via: Literal["link", "staff"] | None = Field(
        default=None, description="how it was won: the client through the link, or staff"
    )
    signed_ip: str | None = Field(default=None, description="the address the client accepted from (link)")
    accepted_version: int | None = Field(default=None, description="the version that was accepted")
    accepted_digest: str | None = Field(default=None, description="the digest of exactly what was accepted")


class VersionOut(BaseModel):
    """One version of an estimate as it was written."""

    model_config = ConfigDict(from_attributes=True)  # read from its row

    deal_id: uuid.UUID
    version: int
    digest: str = Field(description="SHA-256 (hex) of the content's canonical JSON")
    content: dict[str, Any] = Field(description="the version's full content (what the digest covers)")
    created_at: datetime
    valid_until: datetime | None


class WonIn(BaseModel):
    signed_by: str = Field(min_length=1, max_length=200, description="who signed the estimate")
    signed_at: Moment | None = Field(
        default=None, description="when it was signed, with its UTC offset; defaults to now"
    )


class LostIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class ConversionStep(BaseModel):
    from_stage: str
    to_stage: str
    rate: DecimalStr | None = Field(
        description="reached to_stage / reached from_stage; null when none reached from_stage"
    )


class FunnelSlice(BaseModel):
    total: int
    stages: dict[str, int] = Field(description="leads in each stage now")
    reached: dict[str, int] = Field(description="leads that ever reached each stage of the main path")
    conversion: list[ConversionStep]
    overall_conversion: DecimalStr | None = Field(description="share of leads that became paying clients (action)")


class PeriodSlice(FunnelSlice):
    period: str = Field(examples=["2026-03"])


class FunnelOut(FunnelSlice):
    grain: str
    by_channel: dict[str, FunnelSlice]
    by_period: list[PeriodSlice]


class QualificationOut(BaseModel):
    lead_id: uuid.UUID
    qualified: bool
    budget: bool
    authority: bool
    need: bool
    timeline: bool
    reasons: list[str]
    stage: str


class RedFlagIn(BaseModel):
    name: str = Field(description="one of " + ", ".join(RED_FLAGS), examples=["refuses_deposit"])
    evidence: str = Field(min_length=1, max_length=2000, examples=["refused to pay 40% up front on the call"])

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in RED_FLAGS:
            raise ValueError(f"unknown red flag {value!r}; known: {', '.join(RED_FLAGS)}")
        return value


class StageIn(BaseModel):
    stage: str = Field(description="one of " + ", ".join(STAGES))
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("stage")
    @classmethod
    def _stage(cls, value: str) -> str:
        if value not in STAGES:
            raise ValueError(f"unknown stage {value!r}; known: {', '.join(STAGES)}")
        return value


class MergeIn(BaseModel):
    duplicate_id: uuid.UUID = Field(description="the lead merged into this one (it answers with merged_into after)")
    reason: str | None = Field(default=None, max_length=1000)


class ChangeRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from its row (``id`` is ``request_id``)

    request_id: uuid.UUID = Field(validation_alias=AliasChoices("request_id", "id"))
    deal_id: uuid.UUID
    description: str
    line: int | None
    in_scope: bool
    hours: DecimalStr | None
    amount: DecimalStr
    currency: str
    reason: str
    created_at: datetime


class SpendOut(BaseModel):
    channel: str
    period_start: date
    period_end: date
    amount: DecimalStr
    currency: str
    replaced: bool = Field(description="an earlier figure for the same channel, period and currency was corrected")


class ImportRowError(BaseModel):
    row: int = Field(description="data row number in the file (1 = first row after the header)")
    errors: list[str]


class ImportReportOut(BaseModel):
    rows: int
    accepted: int
    duplicates: int
    rejected: int
    errors: list[ImportRowError]
    ignored_columns: list[str] = Field(default_factory=list)


class IcpOut(BaseModel):
    version: int
    document: str = Field(description="the ICP as YAML")
    criteria: dict[str, Any]
    rescored: int | None = None


class ErasedOut(BaseModel):
    lead_id: uuid.UUID
    erased: bool
    erased_at: datetime

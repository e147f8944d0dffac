"""Leads' HTTP request and response bodies (JSON names fixed by DESIGN.md)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.leads.domain import CHANNELS, RED_FLAGS, STAGES
from shared.bounds import DATE_RANGE, EARLIEST, LATEST, Count, Day, Moment, TimeZoneKey
from shared.money import MAX_AMOUNT, Amount, Bounded, CurrencyCode, DecimalStr, in_currency


class LeadIn(BaseModel):
    """A lead as captured from a form, an import or a person. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    email: str = Field(max_length=320, examples=["ada@example.com"])
    company: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=200)
    industry: str | None = Field(default=None, max_length=100)
    employees: Count | None = None
    # Before the amounts, so their validator sees it.
    currency: CurrencyCode | None = Field(default=None, description="currency of budget and annual_revenue")
    annual_revenue: Amount | None = None
    country: str | None = Field(default=None, description="ISO 3166 alpha-2", examples=["GB"])
    language: str = Field(default="en", description="ISO 639-1", examples=["en"])
    timezone: TimeZoneKey = "UTC"
    channel: str = Field(examples=["website"], description="one of " + ", ".join(sorted(CHANNELS)))
    campaign: str | None = Field(default=None, max_length=200)
    utm: dict[str, str] = Field(default_factory=dict)
    budget: Amount | None = None
    brief: str | None = Field(default=None, max_length=20_000)
    timeline: str | None = Field(default=None, max_length=500)
    needs: list[str] = Field(default_factory=list, max_length=50)
    consent_marketing: bool = False
    legal_basis: str | None = Field(default=None, max_length=100)
    referred_by: uuid.UUID | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return validate_email(value, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email: {exc}") from exc

    @field_validator("annual_revenue", "budget")
    @classmethod
    def _minor_units(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return in_currency(value, info.data.get("currency"))

    @field_validator("needs")
    @classmethod
    def _needs(cls, value: list[str]) -> list[str]:
        return [need.strip() for need in value if need and need.strip()]

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        value = value.lower()
        if value not in CHANNELS:
            raise ValueError(f"unknown channel {value!r}; known: {', '.join(sorted(CHANNELS))}")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if pycountry.countries.get(alpha_2=value.upper()) is None:
            raise ValueError(f"unknown country {value!r}: use an ISO 3166 alpha-2 code such as GB")
        return value.upper()

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if pycountry.languages.get(alpha_2=value.lower()) is None:
            raise ValueError(f"unknown language {value!r}: use an ISO 639-1 code such as en")
        return value.lower()

    @model_validator(mode="after")
    def _budget_currency(self) -> LeadIn:
        if self.budget is not None and self.currency is None:
            raise ValueError("a budget needs its currency")
        return self


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
    from_stage: str | None
    to_stage: str
    cause: str
    at: datetime


class ActivityEntry(BaseModel):
    type: str = Field(examples=["email.clicked"])
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class TouchOut(BaseModel):
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


class LeadList(BaseModel):
    items: list[LeadOut]
    total: int
    limit: int
    offset: int


class ScopeLineIn(BaseModel):
    description: str = Field(min_length=1, max_length=1000)
    hours: Bounded | None = Field(default=None, ge=0)
    amount: Amount = Field(description="in the deal's currency, with no more decimals than it has")


class DealIn(BaseModel):
    """An estimate: a project with scope lines, or a retainer with a monthly fee and hours."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=300)
    kind: Literal["project", "retainer"]
    currency: CurrencyCode
    lines: list[ScopeLineIn] = Field(default_factory=list, max_length=500)
    monthly_fee: Amount | None = None
    included_hours: Bounded | None = Field(default=None, ge=0)
    hourly_rate: Amount | None = None

    @field_validator("monthly_fee", "hourly_rate")
    @classmethod
    def _minor_units(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return in_currency(value, info.data.get("currency"))

    @field_validator("lines")
    @classmethod
    def _line_units(cls, lines: list[ScopeLineIn], info: ValidationInfo) -> list[ScopeLineIn]:
        for number, line in enumerate(lines):
            try:
                in_currency(line.amount, info.data.get("currency"))
            except ValueError as exc:
                raise ValueError(f"lines[{number}].amount: {exc}") from None
        return lines

    @model_validator(mode="after")
    def _shape(self) -> DealIn:
        if self.kind == "retainer" and self.monthly_fee is None:
            raise ValueError("a retainer needs monthly_fee")
        if self.kind == "project" and not self.lines:
            raise ValueError("a project estimate needs at least one scope line")
        # Each line is bounded; so is their sum, which travels as deal.won's total (billing
        # dead-lettered a deal.won whose amounts its contract refuses).
        if self.total > MAX_AMOUNT:
            raise ValueError(f"total: the estimate adds up to {format(self.total, 'f')}, above 10^12")
        return self

    @property
    def total(self) -> Decimal:
        lines = sum((line.amount for line in self.lines), Decimal(0))
        return lines if self.kind == "project" else (self.monthly_fee or Decimal(0)) + lines


class DealOut(BaseModel):
    deal_id: uuid.UUID
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
    rate: DecimalStr | None = Field(description="reached to_stage / reached from_stage; null when none reached from_stage")


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


class QualificationIn(BaseModel):
    """BANT answers; an answer left out is read from the intake (budget stated, decision-maker
    title, needs or brief given, timeline given). ``reasons`` disqualify whatever the four say."""

    budget: bool | None = None
    authority: bool | None = None
    need: bool | None = None
    timeline: bool | None = None
    notes: str | None = Field(default=None, max_length=5000)
    reasons: list[str] = Field(default_factory=list, max_length=20, examples=[["competitor"]])


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


class ChangeRequestIn(BaseModel):
    """A change asked for on a signed deal. Without ``in_scope`` it is checked against the
    estimate's lines; an out-of-scope change is priced by ``amount`` or hours x the deal's rate."""

    model_config = ConfigDict(str_strip_whitespace=True)

    description: str = Field(min_length=1, max_length=5000, examples=["Add a blog section"])
    hours: Bounded | None = Field(default=None, ge=0)
    currency: CurrencyCode | None = None
    amount: Amount | None = None
    line: Count | None = Field(default=None, description="the estimate line it is about (from 0)")
    in_scope: bool | None = Field(default=None, description="decide explicitly instead of checking the lines")

    @field_validator("amount")
    @classmethod
    def _minor_units(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        return in_currency(value, info.data.get("currency"))


class ChangeRequestOut(BaseModel):
    request_id: uuid.UUID
    deal_id: uuid.UUID
    description: str
    line: int | None
    in_scope: bool
    hours: DecimalStr | None
    amount: DecimalStr
    currency: str
    reason: str
    created_at: datetime


class SpendIn(BaseModel):
    """Spend for a period: ``period`` as YYYY-MM (a month) or explicit ``period_start``/``period_end``."""

    currency: CurrencyCode
    amount: Amount
    period: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-03"])
    period_start: Day | None = None
    period_end: Day | None = None

    @field_validator("amount")
    @classmethod
    def _minor_units(cls, value: Decimal, info: ValidationInfo) -> Decimal | None:
        return in_currency(value, info.data.get("currency"))

    @field_validator("period")
    @classmethod
    def _year(cls, value: str | None) -> str | None:
        if value is not None and not EARLIEST.year <= int(value[:4]) <= LATEST.year:
            raise ValueError(f"{value} is outside {DATE_RANGE}")
        return value

    @model_validator(mode="after")
    def _period(self) -> SpendIn:
        if self.period is None and (self.period_start is None or self.period_end is None):
            raise ValueError("give period (YYYY-MM) or both period_start and period_end")
        if self.period is not None and (self.period_start or self.period_end):
            raise ValueError("give period or period_start/period_end, not both")
        if self.period_start and self.period_end and self.period_end < self.period_start:
            raise ValueError(f"period_end {self.period_end} is before period_start {self.period_start}")
        return self

    def bounds(self) -> tuple[date, date]:
        if self.period_start and self.period_end:
            return self.period_start, self.period_end
        assert self.period is not None
        year, month = map(int, self.period.split("-"))
        start = date(year, month, 1)
        end = (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)
        return start, end


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

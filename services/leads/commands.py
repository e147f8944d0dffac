"""What can be asked of leads, validated: a lead to capture, an estimate, BANT answers, a change
request, channel spend. HTTP bodies, CSV rows and referrals all become one of these before a
use case sees them (the JSON names are fixed by docs/design.md, "HTTP surface")."""

from __future__ import annotations

import functools
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.leads.domain import CHANNELS, Intake
from shared import events as ev
from shared.bounds import DATE_RANGE, EARLIEST, LATEST, Count, Day, Moment, TimeZoneKey
from shared.money import MAX_AMOUNT, Amount, Bounded, CurrencyCode, in_currency


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
    consent_wording: str | None = Field(
        default=None,
        max_length=40,
        pattern=r"^[\w.\-]+$",
        description="version of the consent wording the form showed (nurture's consent history keeps it)",
        examples=["2026-01"],
    )
    legal_basis: str | None = Field(default=None, max_length=100)
    referred_by: uuid.UUID | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return _normalised_email(value)
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

    @classmethod
    def from_referral(cls, data: ev.ReferralMade, *, referred_by: uuid.UUID | None) -> LeadIn:
        """The lead a referral brings (channel ``referral``); ``ValueError`` when it cannot be one."""
        return cls(
            name=data.name,
            email=data.email,
            company=data.company,
            channel="referral",
            campaign=f"referral:{data.referral_id}",
            referred_by=referred_by,
        )

    def intake(self) -> Intake:
        """What the rules (fit, red flags, BANT) read of it."""
        return Intake(
            industry=self.industry,
            employees=self.employees,
            annual_revenue=self.annual_revenue,
            country=self.country,
            job_title=self.job_title,
            needs=tuple(self.needs),
            budget=self.budget,
            brief=self.brief,
            timeline=self.timeline,
        )


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
    submission_deadline: Moment | None = Field(
        default=None, description="a tender: when the proposal must be submitted (a reminder task comes before it)"
    )
    valid_until: Moment | None = Field(
        default=None,
        description="until when the client may accept the estimate (in the future; default LEADS_ESTIMATE_VALID_DAYS days)",
    )

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


class RevisionIn(DealIn):
    """A proposed estimate revised: the same fields as an estimate; ``kind`` may be left out
    (the deal's own is kept)."""

    kind: Literal["project", "retainer"] | None = None  # type: ignore[assignment]  # optional here only

    def as_deal(self, kind: str) -> DealIn:
        """The revision as a whole estimate of ``kind`` (``ValueError`` when it is not one)."""
        return DealIn.model_validate(self.model_dump() | {"kind": self.kind or kind})


class QualificationIn(BaseModel):
    """BANT answers; an answer left out is read from the intake (budget stated, decision-maker
    title, needs or brief given, timeline given). ``reasons`` disqualify whatever the four say."""

    budget: bool | None = None
    authority: bool | None = None
    need: bool | None = None
    timeline: bool | None = None
    notes: str | None = Field(default=None, max_length=5000)
    reasons: list[str] = Field(default_factory=list, max_length=20, examples=[["competitor"]])


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


@functools.lru_cache(maxsize=4096)
def _normalised_email(value: str) -> str:
    """``value`` checked and normalised (no DNS: a pure function of the text). Kept, as a batch's
    prefetch and then its referral's capture validate the same address: parsing it was a tenth
    of a consumed referral's time."""
    return validate_email(value, check_deliverability=False).normalized.lower()

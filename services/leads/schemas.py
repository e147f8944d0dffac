"""Leads' HTTP request and response bodies (JSON names fixed by DESIGN.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.leads.domain import CHANNELS
from shared.money import Amount, CurrencyCode, DecimalStr


class LeadIn(BaseModel):
    """A lead as captured from a form, an import or a person. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    email: str = Field(max_length=320, examples=["ada@example.com"])
    company: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=200)
    industry: str | None = Field(default=None, max_length=100)
    employees: int | None = Field(default=None, ge=0)
    annual_revenue: Amount | None = None
    country: str | None = Field(default=None, description="ISO 3166 alpha-2", examples=["GB"])
    language: str = Field(default="en", description="ISO 639-1", examples=["en"])
    timezone: str = Field(default="UTC", examples=["Europe/London"])
    channel: str = Field(examples=["website"], description="one of " + ", ".join(sorted(CHANNELS)))
    campaign: str | None = Field(default=None, max_length=200)
    utm: dict[str, str] = Field(default_factory=dict)
    budget: Amount | None = None
    currency: CurrencyCode | None = None
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


class StageEntry(BaseModel):
    from_stage: str | None
    to_stage: str
    cause: str
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
    engagement_score: int
    red_flags: list[dict[str, Any]]
    tier: str | None
    created_at: datetime
    erased: bool
    timeline: list[StageEntry] = Field(default_factory=list)


class LeadList(BaseModel):
    items: list[LeadOut]
    total: int
    limit: int
    offset: int


class ScopeLineIn(BaseModel):
    description: str = Field(min_length=1, max_length=1000)
    hours: DecimalStr | None = Field(default=None, ge=0)
    amount: Amount


class DealIn(BaseModel):
    """An estimate: a project with scope lines, or a retainer with a monthly fee and hours."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=300)
    kind: Literal["project", "retainer"]
    currency: CurrencyCode
    lines: list[ScopeLineIn] = Field(default_factory=list, max_length=500)
    monthly_fee: Amount | None = None
    included_hours: DecimalStr | None = Field(default=None, ge=0)
    hourly_rate: Amount | None = None

    @model_validator(mode="after")
    def _shape(self) -> DealIn:
        if self.kind == "retainer" and self.monthly_fee is None:
            raise ValueError("a retainer needs monthly_fee")
        if self.kind == "project" and not self.lines:
            raise ValueError("a project estimate needs at least one scope line")
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


class WonIn(BaseModel):
    signed_by: str = Field(min_length=1, max_length=200, description="who signed the estimate")
    signed_at: datetime | None = Field(default=None, description="when it was signed; defaults to now")


class LostIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class FunnelOut(BaseModel):
    stages: dict[str, int]
    total: int

"""Retention's HTTP request and response bodies (JSON names fixed by docs/design.md, "HTTP surface").

Bodies that are a stored row as it is read from the row (``from_attributes``); the routes map
the others (services/retention/api.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, EmailStr, Field

from shared.money import CurrencyCode, DecimalStr

CancellationReason = Literal[
    "price", "budget_cut", "not_using", "poor_results", "switching_provider", "project_done", "other"
]


_OWNER = "the person in sales who owns the lead (`lead.captured`, `lead.assigned` role lead); null: nobody"
_ACCOUNT_OWNER = (
    "the person in success the client was handed to at a won deal (`lead.assigned` role account); null: nobody"
)


class MoneyOut(BaseModel):
    amount: DecimalStr
    currency: CurrencyCode


class EventRef(BaseModel):
    event_id: uuid.UUID
    type: str
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class FactorOut(BaseModel):
    value: int = Field(ge=0, le=100, description="0-100, higher is healthier")
    weight: int = Field(ge=0)
    evidence: dict[str, int] = Field(default_factory=dict, description="the counts behind the value")
    explanation: str = Field(default="", description="how the value is computed")
    events: list[EventRef] = Field(default_factory=list, description="the latest events behind it (20 at most)")


class TrendOut(BaseModel):
    direction: Literal["up", "down", "flat", "unknown"]
    delta: int | None = Field(description="score now minus the score `RETENTION_TREND_DAYS` ago")
    since_score: int | None


class ChurnRiskOut(BaseModel):
    open: bool = Field(description="an episode is open (churn_risk.raised was published once for it)")
    reasons: list[str]
    raised_at: datetime | None


class ClientOut(BaseModel):
    """A client's health as last assessed, with the evidence behind it."""

    lead_id: uuid.UUID
    channel: str | None
    captured_at: datetime | None
    became_client_at: datetime | None = Field(description="when the first deposit cleared; null for a prospect")
    tier: str | None
    health_score: int | None = Field(description="0-100; null until the person is a client")
    band: Literal["red", "yellow", "green"] | None
    factors: dict[str, FactorOut]
    revenue: list[MoneyOut] = Field(description="payments received, one entry per currency")
    mrr: MoneyOut | None = Field(description="active subscriptions only; null without any subscription")
    subscription_status: Literal["none", "active", "paused", "cancelled"]
    deals_won: int
    erased: bool
    trend: TrendOut | None = None
    tier_reasons: list[str] = Field(default_factory=list)
    churn_risk: ChurnRiskOut | None = None
    counts: dict[str, int] = Field(default_factory=dict, description="payments, failures, requests, feedback")
    takeover_active: bool = False
    loyalty_points: int = 0
    referrals_made: int = 0
    referrals_converted: int = 0
    referred_by: uuid.UUID | None = None
    owner_id: uuid.UUID | None = Field(default=None, description=_OWNER)
    account_owner_id: uuid.UUID | None = Field(default=None, description=_ACCOUNT_OWNER)


class ClientSummary(BaseModel):
    lead_id: uuid.UUID
    tier: str | None
    health_score: int | None
    band: str | None
    subscription_status: str
    mrr: MoneyOut | None
    became_client_at: datetime | None
    owner_id: uuid.UUID | None = Field(default=None, description=_OWNER)
    account_owner_id: uuid.UUID | None = Field(default=None, description=_ACCOUNT_OWNER)


class ClientList(BaseModel):
    items: list[ClientSummary]
    total: int
    limit: int
    offset: int


class CancellationIn(BaseModel):
    """A client asks to cancel; they are offered a pause or a discount first."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    reason: CancellationReason = Field(examples=["price"])
    comment: str | None = Field(default=None, max_length=5000)


class OfferOut(BaseModel):
    kind: Literal["pause", "discount", "downgrade", "none"]
    fee: DecimalStr | None = Field(default=None, description="monthly fee while the offer runs")
    discount_percent: DecimalStr | None = None
    months: int | None = None
    currency: str | None = None
    description: str = ""


class CancellationOut(BaseModel):
    # Read from a ``Cancellation`` row (its ``id``).
    model_config = ConfigDict(from_attributes=True)

    cancellation_id: uuid.UUID = Field(validation_alias=AliasChoices("cancellation_id", "id"))
    lead_id: uuid.UUID
    status: Literal["requested", "saved", "completed"]
    reason: str
    comment: str | None
    offer: OfferOut
    created_at: datetime
    decided_at: datetime | None


class StageOut(BaseModel):
    stage: Literal["leads", "qualified", "proposed", "won", "clients"]
    count: int
    from_previous: DecimalStr | None = Field(description="share of the previous stage; null when it had none")
    from_leads: DecimalStr | None


class LogoChurnOut(BaseModel):
    rate: DecimalStr | None = Field(description="clients lost in the period / clients at its start")
    monthly_rate: DecimalStr | None = Field(description="rate / months in the period (used by LTV)")
    lost: int
    clients_at_start: int
    reason: str | None = Field(default=None, description="why the rate is null")


class MovementsOut(BaseModel):
    new: DecimalStr
    expansion: DecimalStr
    contraction: DecimalStr
    churn: DecimalStr
    pause: DecimalStr = Field(description="MRR that left with a pause (neither churn nor contraction)")
    resume: DecimalStr


class CohortOut(BaseModel):
    cohort: str = Field(examples=["2026-01"], description="month the clients first subscribed")
    clients: int
    retention: list[DecimalStr | None] = Field(description="share still a client at the end of month 1, 2, ...")


class ReferralIn(BaseModel):
    """A client refers someone new (`lead_id` is the referrer)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    lead_id: uuid.UUID = Field(description="the referrer")
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    company: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class ReferralOut(BaseModel):
    # Read from a ``Referral`` row (its ``id`` and ``referrer_id``).
    model_config = ConfigDict(from_attributes=True)

    referral_id: uuid.UUID = Field(validation_alias=AliasChoices("referral_id", "id"))
    lead_id: uuid.UUID = Field(description="the referrer", validation_alias=AliasChoices("lead_id", "referrer_id"))
    status: Literal["made", "captured", "converted"]
    created_at: datetime


class ReviewOut(BaseModel):
    review_id: uuid.UUID
    period: str
    at: datetime
    tiers: dict[str, int]
    changes: list[dict[str, Any]]
    let_go: list[dict[str, Any]] = Field(description="fire clients: reasons and the revenue at stake")


class EconomicsOut(BaseModel):
    """Unit economics of the period [from, to) (the formulas of docs/design.md); a null figure has
    its reason in `reasons`."""

    from_: datetime = Field(alias="from")
    to: datetime
    channel: str | None
    currency: str
    gross_margin: DecimalStr
    months: DecimalStr
    leads: int
    funnel: list[StageOut]
    new_clients: int
    spend: MoneyOut
    cac: DecimalStr | None
    arpa: DecimalStr | None
    ltv: DecimalStr | None
    ltv_cac: DecimalStr | None
    payback_months: DecimalStr | None
    logo_churn: LogoChurnOut
    revenue_churn: DecimalStr | None
    mrr_start: DecimalStr
    mrr_end: DecimalStr
    mrr_movements: MovementsOut
    nrr: DecimalStr | None
    grr: DecimalStr | None
    clients_at_end: int
    fire_clients: int
    fire_share: DecimalStr | None
    leaked_revenue: MoneyOut
    exit_reasons: dict[str, int]
    cohorts: list[CohortOut]
    reasons: dict[str, str]
    # Now, whatever the period: the live snapshot.
    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: list[MoneyOut] = Field(description="active subscriptions by currency now; paused ones excluded")
    revenue: list[MoneyOut]
    as_of: datetime

    model_config = ConfigDict(populate_by_name=True)

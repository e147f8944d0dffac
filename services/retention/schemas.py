"""Retention's HTTP request and response bodies (JSON names fixed by docs/design.md, "HTTP surface").

Bodies that are a stored row as it is read from the row (``from_attributes``); the routes map
the others (services/retention/api.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
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


class ManualTierOut(BaseModel):
    """A tier an admin set by hand."""

    tier: Literal["best", "good", "tolerable", "fire"]
    reason: str
    until: date = Field(description="it holds until this day (exclusive, 00:00 UTC)")
    set_by: str | None = Field(default=None, description="who set it")
    set_at: datetime | None = None


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
    termination: TerminationOut | None = Field(
        default=None, description="the agency ended the relationship: why, the notice, when it ends"
    )
    computed_tier: str | None = Field(
        default=None, description="the tier the rules give (the last review's); `tier` is the one in force"
    )
    manual_tier: ManualTierOut | None = Field(
        default=None, description="a tier set by hand, in force until `until` (it wins over the computed one)"
    )
    account_id: uuid.UUID | None = Field(default=None, description="the company account the client belongs to")


class ManualTierIn(BaseModel):
    """Set a client's tier by hand: it wins over the computed tier until `until`."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    tier: Literal["best", "good", "tolerable", "fire"] = Field(examples=["fire"])
    reason: str = Field(min_length=1, max_length=1000, examples=["abusive to the design team"])
    until: date = Field(description="a future day (business clock); the manual tier ends at its start")


class TierOut(BaseModel):
    """A client's tier in force, the computed one and the manual one if any."""

    lead_id: uuid.UUID
    tier: str | None = Field(description="the tier in force")
    computed_tier: str | None = Field(description="what the tier rules give")
    manual_tier: ManualTierOut | None
    reasons: list[str] = Field(default_factory=list)


NoteTag = Literal["blames_us", "mistreats_staff", "expectation_mismatch", "scope_creep", "slow_payer", "great_partner"]


class NoteIn(BaseModel):
    """A note on a client; tags from a fixed list."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=5000, examples=["Shouted at our designer on the call."])
    tags: list[NoteTag] = Field(default_factory=list, max_length=6, examples=[["mistreats_staff"]])


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    note_id: uuid.UUID = Field(validation_alias=AliasChoices("note_id", "id"))
    lead_id: uuid.UUID
    text: str
    tags: list[str]
    author_id: str | None
    created_at: datetime


class ClientSummary(BaseModel):
    lead_id: uuid.UUID
    tier: str | None
    health_score: int | None
    band: str | None
    subscription_status: str
    mrr: MoneyOut | None
    became_client_at: datetime | None
    owner_id: uuid.UUID | None = Field(default=None, description=_OWNER)
    account_id: uuid.UUID | None = Field(default=None, description="the company account, if any")
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


class TerminationIn(BaseModel):
    """The agency ends the relationship: why, and the notice it gives (days; the setting
    `RETENTION_TERMINATION_NOTICE_DAYS`, 30, when left out)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    reason: Literal["fired", "non_payment", "scope_abuse", "mistreats_staff", "other"] = Field(examples=["fired"])
    notice_days: int | None = Field(default=None, ge=0, le=365, description="days of notice, 0-365", examples=[30])
    comment: str | None = Field(default=None, max_length=2000)


class TerminationOut(BaseModel):
    """A termination: `notice` until `effective_at`, then `ended`."""

    termination_id: uuid.UUID
    lead_id: uuid.UUID
    reason: str
    comment: str | None = None
    notice_days: int
    effective_at: datetime = Field(description="when the relationship ends: the moment it was decided + notice_days")
    status: Literal["notice", "ended"]
    subscription_ids: list[uuid.UUID] = Field(default_factory=list, description="the subscriptions it ends")
    created_at: datetime


class ChurnSplitOut(BaseModel):
    voluntary: int = Field(description="clients who left of their own accord (the cancellation flow)")
    involuntary: int = Field(description="clients billing's dunning let go for non-payment")
    terminated: int = Field(description="clients the agency let go: not churn, reported apart")


class TerminationLineOut(BaseModel):
    count: int
    mrr: DecimalStr = Field(description="MRR the terminated subscriptions took, in the period's currency")


class TerminationsOut(TerminationLineOut):
    """Terminations effective in the period: excluded from logo and revenue churn, NRR and GRR."""

    by_reason: dict[str, int] = Field(default_factory=dict)
    by_channel: dict[str, TerminationLineOut] = Field(default_factory=dict)


class OfferIn(BaseModel):
    """A save offer a person tailors for one client before they answer it: a discount by percent,
    or a pause or smaller plan at a fee, for 1 to 24 months."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["pause", "discount", "downgrade"] = Field(examples=["discount"])
    discount_percent: DecimalStr | None = Field(
        default=None, gt=0, le=100, description="a discount's percent off (over 0, at most 100)"
    )
    fee: DecimalStr | None = Field(default=None, ge=0, description="the monthly fee of a pause or a downgrade")
    months: int = Field(ge=1, le=24, description="how many monthly periods the offer covers")
    included_hours: DecimalStr | None = Field(
        default=None, ge=0, le=10000, description="hours included a month on the smaller plan (a downgrade)"
    )


class OfferOut(BaseModel):
    kind: Literal["pause", "discount", "downgrade", "none"]
    fee: DecimalStr | None = Field(default=None, description="monthly fee while the offer runs")
    discount_percent: DecimalStr | None = None
    months: int | None = None
    currency: str | None = None
    description: str = ""
    included_hours: DecimalStr | None = Field(default=None, description="hours included a month on a downgrade")


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
    manual: list[dict[str, Any]] = Field(
        default_factory=list,
        description="clients whose tier was set by hand: the manual tier, its reason and until, the computed tier",
    )


class ChannelReturnOut(BaseModel):
    spend: DecimalStr = Field(description="the channel's spend in the period")
    leads: int = Field(description="leads captured in the period")
    qualified_leads: int = Field(description="of them, qualified")
    cost_per_lead: DecimalStr | None
    cost_per_qualified_lead: DecimalStr | None
    new_clients: int
    first_year_revenue: DecimalStr = Field(description="paid by the period's new clients within a year of joining")
    roi: DecimalStr | None = Field(description="(first-year revenue - spend) / spend")


class YearlyRetentionPointOut(BaseModel):
    month: str
    ratio: DecimalStr | None


class YearlyRetentionOut(BaseModel):
    """Revenue of the last year from clients who were clients a year before, over theirs the year before."""

    ratio: DecimalStr | None
    clients: int = Field(description="clients who were clients a year before the end of the period")
    revenue_this_year: DecimalStr
    revenue_year_before: DecimalStr
    stayed_ratio: DecimalStr | None = Field(
        default=None,
        description="the same ratio for the clients still clients at the end (what a kept client grows to)",
    )
    stayed_clients: int = Field(default=0, description="of the clients a year before, those still clients at the end")
    trend: list[YearlyRetentionPointOut] = Field(description="the ratio at the end of each month of the period")


class LifetimeBucketOut(BaseModel):
    months: str
    clients: int


class LifetimeOut(BaseModel):
    median_lifetime_months: DecimalStr | None = Field(
        description="product-limit (Kaplan-Meier) median: clients still running count as staying so far; null until half left"
    )
    median_of_those_who_left: DecimalStr | None = Field(description="the plain median of the lifetimes that are over")
    lifetime_distribution: list[LifetimeBucketOut]
    clients_left: int
    clients_running: int
    median_tenure_running_months: DecimalStr | None


class LeakOut(BaseModel):
    """Clients who left unhappy (a complaint, feedback of 6 or less, or `poor_results`, in the 60
    days before leaving) over the clients served in the period; the goal is under 5%."""

    share: DecimalStr | None
    unhappy: int
    left: int
    clients: int = Field(description="clients served in the period: there at its start or joined during it")
    goal: DecimalStr
    goal_met: bool


class HoursGroupOut(BaseModel):
    clients: int
    median_lifetime_months: DecimalStr | None = Field(default=None, description="product-limit median")
    average_lifetime_months: DecimalStr | None = Field(description="to leaving, or so far for those still running")
    average_revenue: DecimalStr | None


class IncludedHoursOut(BaseModel):
    """Retainer clients with included hours against those without."""

    with_hours: HoursGroupOut
    without_hours: HoursGroupOut
    months_longer: DecimalStr | None = Field(description="how many months longer clients with included hours stay")
    measured_by: str = Field(
        default="median_lifetime_months", description="the lifetimes compared: the medians, else the averages so far"
    )


class AgeGroupOut(BaseModel):
    invoices: int
    average_invoice: DecimalStr | None
    paying_clients: int
    revenue_per_client: DecimalStr | None


class NewAgainstOldOut(BaseModel):
    month: str
    new: AgeGroupOut = Field(description="clients in their first six months")
    old: AgeGroupOut = Field(description="clients older than six months")


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
    churn_split: ChurnSplitOut | None = Field(
        default=None, description="clients lost by who ended it; only voluntary + involuntary count as churn"
    )
    terminations: TerminationsOut | None = None
    cohorts: list[CohortOut]
    roi: DecimalStr | None = Field(
        default=None, description="(first-year revenue of the period's new clients - spend) / spend"
    )
    first_year_revenue: DecimalStr | None = None
    cost_per_lead: DecimalStr | None = None
    cost_per_qualified_lead: DecimalStr | None = None
    channels: dict[str, ChannelReturnOut] = Field(default_factory=dict, description="ROI and lead cost per channel")
    yearly_revenue_retention: YearlyRetentionOut | None = None
    median_lifetime_months: DecimalStr | None = None
    lifetime: LifetimeOut | None = None
    leak: LeakOut | None = None
    included_hours: IncludedHoursOut | None = None
    new_against_old: list[NewAgainstOldOut] = Field(default_factory=list)
    converted: bool = Field(default=False, description="amounts in other currencies converted at the rates set")
    reasons: dict[str, str]
    # Now, whatever the period: the live snapshot.
    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: list[MoneyOut] = Field(description="active subscriptions by currency now; paused ones excluded")
    revenue: list[MoneyOut]
    as_of: datetime

    model_config = ConfigDict(populate_by_name=True)


class AccountClientsOut(BaseModel):
    """A company account as retention sees it: its clients' MRR, revenue and health."""

    account_id: uuid.UUID
    clients: list[ClientSummary] = Field(description="the account's clients (prospects left out)")
    mrr: list[MoneyOut] = Field(description="active subscriptions' MRR, one entry per currency")
    revenue: list[MoneyOut] = Field(description="payments received from the account's people, per currency")
    worst_health: int | None = Field(description="the lowest health score of its clients")
    worst_band: str | None = Field(description="the band of that score")
    average_health: DecimalStr | None = Field(description="the mean health score of its clients (2 places)")

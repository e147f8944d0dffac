"""Retention's HTTP request and response bodies (JSON names fixed by DESIGN.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import CurrencyCode, DecimalStr

CancellationReason = Literal[
    "price", "budget_cut", "not_using", "poor_results", "switching_provider", "project_done", "other"
]


class MoneyOut(BaseModel):
    amount: DecimalStr
    currency: CurrencyCode


class FactorOut(BaseModel):
    value: int = Field(ge=0, le=100, description="0-100, higher is healthier")
    weight: int = Field(ge=0)
    evidence: dict[str, int] = Field(default_factory=dict, description="the counts behind the value")


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


class ClientSummary(BaseModel):
    lead_id: uuid.UUID
    tier: str | None
    health_score: int | None
    band: str | None
    subscription_status: str
    mrr: MoneyOut | None
    became_client_at: datetime | None


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
    cancellation_id: uuid.UUID
    lead_id: uuid.UUID
    status: Literal["requested", "saved", "completed"]
    reason: str
    comment: str | None
    offer: OfferOut
    created_at: datetime
    decided_at: datetime | None


class LogoChurnOut(BaseModel):
    rate: DecimalStr | None = Field(description="cancelled / ever subscribed; null when undefined")
    cancelled: int
    ever_subscribed: int
    period: str = "all_time"
    reason: str | None = Field(default=None, description="why the rate is null")


class EconomicsOut(BaseModel):
    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: list[MoneyOut] = Field(description="active subscriptions by currency; paused ones excluded")
    revenue: list[MoneyOut]
    logo_churn: LogoChurnOut
    as_of: datetime

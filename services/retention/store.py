"""Retention's own tables.

A client row is a projection of other services' events, created on the first event seen about
a person (events arrive on several topics, so ``lead.captured`` is not always first). It keeps
counts, not copies: retention holds almost no personal data.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING, Money, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Client(Base):
    """One person, from first sight; a client once the first deposit cleared."""

    __tablename__ = "clients"

    lead_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str | None] = mapped_column(String(32), index=True)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    became_client_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    tier: Mapped[str | None] = mapped_column(String(20), index=True)
    tier_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    health_score: Mapped[int | None]
    band: Mapped[str | None] = mapped_column(String(10), index=True)
    health_factors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health_assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Summary of the client's subscriptions (the rows are in ``subscriptions``).
    subscription_id: Mapped[uuid.UUID | None]  # the most recently started one
    subscription_status: Mapped[str] = mapped_column(String(20), default="none", index=True)
    mrr: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    mrr_currency: Mapped[str | None] = mapped_column(String(3))
    first_subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Behaviour, counted; the evidence behind health and (later) tier reviews.
    deals_won: Mapped[int] = mapped_column(default=0)
    invoices_issued: Mapped[int] = mapped_column(default=0)
    payments_on_time: Mapped[int] = mapped_column(default=0)
    payments_late: Mapped[int] = mapped_column(default=0)
    days_late_total: Mapped[int] = mapped_column(default=0)
    payments_failed: Mapped[int] = mapped_column(default=0)
    change_requests: Mapped[int] = mapped_column(default=0)
    out_of_scope_requests: Mapped[int] = mapped_column(default=0)
    feedback_count: Mapped[int] = mapped_column(default=0)
    complaints: Mapped[int] = mapped_column(default=0)
    last_feedback_score: Mapped[int | None]
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Funnel moments (economics: conversion at each stage, per channel).
    qualified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    proposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    won_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A one-way hash of the e-mail address: "is this person already a client?" without keeping it.
    email_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    referred_by: Mapped[uuid.UUID | None] = mapped_column(index=True)
    hourly_rate: Mapped[Decimal | None] = mapped_column(Money())
    red_flags: Mapped[int] = mapped_column(default=0)
    # Engagement and attention.
    engagement_seen: Mapped[bool] = mapped_column(default=False)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    takeover_active: Mapped[bool] = mapped_column(default=False)
    takeovers: Mapped[int] = mapped_column(default=0)
    overdue_invoices: Mapped[list[str]] = mapped_column(JSON, default=list)
    hours_used: Mapped[Decimal | None] = mapped_column(Money())  # last month reported
    hours_included: Mapped[Decimal | None] = mapped_column(Money())
    # Months running the client used under the underuse share of their included hours (the
    # nudge goes at the second).
    underused_months: Mapped[int] = mapped_column(default=0)
    price_increase_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Churn risk: one episode open at a time; raised once per episode.
    churn_risk_open: Mapped[bool] = mapped_column(default=False)
    churn_risk_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    churn_risk_raised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tier_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    loyalty_points: Mapped[int] = mapped_column(default=0)
    referrals_made: Mapped[int] = mapped_column(default=0)
    referrals_converted: Mapped[int] = mapped_column(default=0)
    # Who works with them (person ids of the people registry), folded from ``lead.captured`` and
    # ``lead.assigned``: the sales owner of the lead, and the account owner (success) the client
    # was handed to at a won deal. ``GET /clients?owner=`` filters on the account owner.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    account_owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The company account the person belongs to (leads' lead.captured): GET /clients?account_id=.
    account_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    # What the tier rules say (the review's own finding); ``tier`` is the effective one, which a
    # manual tier (``manual_tiers``) overrides while in force. None: not reviewed since.
    computed_tier: Mapped[str | None] = mapped_column(String(20), default=None)

    # The gauges count clients (not prospects) by tier and by band after commits: partial
    # indexes hold only clients, so a count reads them alone. Through ``ix_clients_tier`` SQLite
    # read every row of a 100,000-row table (45 ms a count against 3 ms).
    __table_args__ = tuple(
        Index(
            f"ix_clients_client_{column}",
            column,
            sqlite_where=text("became_client_at IS NOT NULL"),
            postgresql_where=text("became_client_at IS NOT NULL"),
        )
        for column in ("tier", "band")
    )


class ClientNote(Base):
    """A note staff kept on a client, with tags from a fixed list (personal data: the text is
    never published, and the notes go with the person on erasure)."""

    __tablename__ = "client_notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    author_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ManualTierRow(Base):
    """A tier an admin set by hand: it wins over the computed tier until ``until`` (exclusive)."""

    __tablename__ = "manual_tiers"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    until: Mapped[date] = mapped_column(index=True)
    set_by: Mapped[str | None] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClientMoney(Base):
    """Running totals per client, measure and currency (revenue, won deal value, invoiced).

    One row per currency, so amounts in different currencies are never added together."""

    __tablename__ = "client_money"

    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), primary_key=True)
    measure: Mapped[str] = mapped_column(String(20), primary_key=True)  # revenue | won | invoiced
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))


class Subscription(Base):
    """A retainer as billing reports it; a client may hold several over time."""

    __tablename__ = "subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    deal_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(20))  # active | paused | cancelled
    # Unknown when a pause or cancellation is the first we hear of it (its start went astray).
    monthly_fee: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    paused_fee: Mapped[Decimal | None] = mapped_column(Money())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_reason: Mapped[str | None] = mapped_column(String(100))
    pending_fee: Mapped[Decimal | None] = mapped_column(Money())  # a scheduled price change
    pending_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_subscriptions_status", "status"),)


class Cancellation(Base):
    """A client's request to cancel, the save offer made, and how it ended."""

    __tablename__ = "cancellations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    subscription_id: Mapped[uuid.UUID | None]
    reason: Mapped[str] = mapped_column(String(40))
    comment: Mapped[str | None] = mapped_column(Text)  # free text may name people: erased with the client
    offer: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))  # requested | saved | completed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_cancellations_status", "status"),)


class Termination(Base):
    """The agency ended the relationship (not the client): why, the notice given, when it ends."""

    __tablename__ = "terminations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    comment: Mapped[str | None] = mapped_column(Text)  # free text may name people: erased with the client
    notice_days: Mapped[int]
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(20))  # notice | ended
    subscription_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


_ID = BigInteger().with_variant(Integer, "sqlite")


class ClientEvent(Base):
    """The client's timeline: the events behind every factor (no personal data in ``detail``)."""

    __tablename__ = "client_events"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"))
    event_id: Mapped[uuid.UUID]
    type: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_client_events_lead_at", "lead_id", "at"), Index("ix_client_events_type", "type"))


class MrrMovement(Base):
    """One change of MRR (new, expansion, contraction, churn, pause, resume), dated."""

    __tablename__ = "mrr_movements"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    subscription_id: Mapped[uuid.UUID | None]
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    logo: Mapped[int] = mapped_column(default=0)


class ExchangeRate(Base):
    """What one unit of ``currency`` is worth in ``quote`` from ``valid_from`` on (set as data,
    ``PUT /exchange-rates``; announced as ``exchange_rate.set`` so a replay rebuilds it)."""

    __tablename__ = "exchange_rates"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    quote: Mapped[str] = mapped_column(String(3), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    # Text, exactly as given: a rate needs more places than money's four.
    rate_text: Mapped[str] = mapped_column(String(40))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def rate(self) -> Decimal:
        return Decimal(self.rate_text)


class ChannelSpend(Base):
    """Acquisition spend per channel and period, as leads records it."""

    __tablename__ = "channel_spend"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), index=True)
    period_start: Mapped[date]
    period_end: Mapped[date]
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))


class HealthPoint(Base):
    """Score history, one row per change (the trend)."""

    __tablename__ = "health_history"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    score: Mapped[int]

    __table_args__ = (Index("ix_health_history_lead_at", "lead_id", "at"),)


class TierReview(Base):
    """One scheduled (or requested) tier review and what it found."""

    __tablename__ = "tier_reviews"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


class LoyaltyAward(Base):
    """Points earned by a paid invoice, awarded once its refund window has passed."""

    __tablename__ = "loyalty_awards"

    invoice_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(20))  # pending | awarded | voided
    points: Mapped[int] = mapped_column(default=0)
    awarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Referral(Base):
    """A client referred someone; credited when that person becomes a client."""

    __tablename__ = "referrals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    referrer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.lead_id"), index=True)
    email_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    referred_lead_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(20))  # made | captured | converted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

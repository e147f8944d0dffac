"""Leads' own tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING, Money, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    company_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    job_title: Mapped[str | None] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(100))
    employees: Mapped[int | None]
    annual_revenue: Mapped[Decimal | None] = mapped_column(Money())
    country: Mapped[str | None] = mapped_column(String(2))
    language: Mapped[str] = mapped_column(String(8), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    channel: Mapped[str] = mapped_column(String(32), index=True)
    campaign: Mapped[str | None] = mapped_column(String(200))
    utm: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    budget: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    brief: Mapped[str | None] = mapped_column(Text)
    timeline: Mapped[str | None] = mapped_column(String(500))
    needs: Mapped[list[str]] = mapped_column(JSON, default=list)
    consent_marketing: Mapped[bool] = mapped_column(default=False)
    legal_basis: Mapped[str | None] = mapped_column(String(100))
    referred_by: Mapped[uuid.UUID | None]
    stage: Mapped[str] = mapped_column(String(20), index=True)
    fit_score: Mapped[int]
    fit_matched: Mapped[list[str]] = mapped_column(JSON, default=list)
    fit_missed: Mapped[list[str]] = mapped_column(JSON, default=list)
    engagement_score: Mapped[int] = mapped_column(default=0)
    red_flags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tier: Mapped[str | None] = mapped_column(String(20))
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def red_flag_names(self) -> list[str]:
        return [flag["name"] for flag in self.red_flags]


class Touch(Base):
    """Each time a person reached us (first capture and every duplicate since)."""

    __tablename__ = "touches"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    campaign: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class StageChange(Base):
    __tablename__ = "stage_history"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    cause: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Deal(Base):
    __tablename__ = "deals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    total: Mapped[Decimal] = mapped_column(Money())
    monthly_fee: Mapped[Decimal | None] = mapped_column(Money())
    included_hours: Mapped[Decimal | None] = mapped_column(Money())
    hourly_rate: Mapped[Decimal | None] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    signed_by: Mapped[str | None] = mapped_column(String(200))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deposit_share: Mapped[Decimal | None] = mapped_column(Money())
    lost_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_deals_status", "status"),)

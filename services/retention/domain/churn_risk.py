"""How churn risk is judged: five rules over the client's record and recent timeline.

A rule that fires opens an episode (``churn_risk.raised`` once); the episode closes when no rule
fires any more. The windows and thresholds are ``RiskPolicy``'s (``RETENTION_RISK_*``); the
recent window is the health score's engagement window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from services.retention.domain.health import ENGAGEMENT_TYPES, HealthPolicy, TimelineEntry, count_events

CHURN_RISK_RULES = ("late_payments", "engagement_drop", "complaints", "hours_underused", "price_increase_ahead")


def _named(name: str) -> AliasChoices:
    """A policy field, also given by its settings name (``RETENTION_RISK_`` + the name)."""
    return AliasChoices(name, f"risk_{name}")


class RiskPolicy(BaseModel):
    """Thresholds of the churn-risk rules."""

    model_config = ConfigDict(frozen=True)

    late_payments: int = Field(
        default=2,
        ge=1,
        validation_alias=_named("late_payments"),
        description="late payments within the late-payments window",
    )
    late_payments_window_days: int = Field(
        default=90,
        ge=1,
        validation_alias=_named("late_payments_window_days"),
        description="the window late payments are counted in",
    )
    engagement_drop_share: Decimal = Field(
        default=Decimal("0.5"),
        gt=0,
        le=1,
        validation_alias=_named("engagement_drop_share"),
        description="recent opens and clicks under this share of the window before are a drop",
    )
    engagement_min_before: int = Field(
        default=2,
        ge=1,
        validation_alias=_named("engagement_min_before"),
        description="opens and clicks the window before needs for a drop to count",
    )
    underused_share: Decimal = Field(
        default=Decimal("0.5"),
        gt=0,
        le=1,
        validation_alias=_named("underused_share"),
        description="hours used under this share of the included hours",
    )
    price_notice_days: int = Field(
        default=30,
        ge=1,
        validation_alias=_named("price_notice_days"),
        description="a price increase this close is a risk",
    )

    @property
    def late_payments_window(self) -> timedelta:
        return timedelta(days=self.late_payments_window_days)


def lookback(health: HealthPolicy, risk: RiskPolicy) -> timedelta:
    """How far back the health and churn-risk rules read the timeline: the engagement window
    and the one before it (the drop rule compares them), or the late-payments window."""
    return max(2 * health.window, risk.late_payments_window)


@dataclass(frozen=True)
class RiskEvidence:
    """What the churn-risk rules look at, counted over their windows."""

    late_payments_recent: int = 0
    overdue_open: int = 0
    engagement_recent: int = 0
    engagement_before: int = 0
    unsubscribed_recent: bool = False
    complaints_recent: int = 0
    hours_used: Decimal | None = None
    hours_included: Decimal | None = None
    price_increase_at: datetime | None = None


class RiskRecord(Protocol):
    """What the churn-risk rules read of a client's record (the ``clients`` row)."""

    @property
    def overdue_invoices(self) -> list[str]: ...
    @property
    def unsubscribed_at(self) -> datetime | None: ...
    @property
    def hours_used(self) -> Decimal | None: ...
    @property
    def hours_included(self) -> Decimal | None: ...
    @property
    def price_increase_at(self) -> datetime | None: ...


def risk_evidence(
    client: RiskRecord,
    events: Iterable[TimelineEntry],
    policy: RiskPolicy,
    *,
    window: timedelta,
    now: datetime,
) -> RiskEvidence:
    """What the rules look at now: late payments of the late-payments window, opens and clicks
    of the recent ``window`` and of the one before, complaints and an unsubscribe of the recent
    window, overdue invoices, hours and a price increase ahead."""
    timeline = list(events)
    return RiskEvidence(
        late_payments_recent=count_events(
            timeline, ("payment.succeeded",), since=now - policy.late_payments_window, where={"late": True}
        ),
        overdue_open=len(client.overdue_invoices or []),
        engagement_recent=count_events(timeline, ENGAGEMENT_TYPES, since=now - window),
        engagement_before=count_events(timeline, ENGAGEMENT_TYPES, since=now - 2 * window, until=now - window),
        unsubscribed_recent=client.unsubscribed_at is not None and client.unsubscribed_at >= now - window,
        complaints_recent=count_events(timeline, ("feedback.received",), since=now - window, where={"complaint": True}),
        hours_used=client.hours_used,
        hours_included=client.hours_included,
        price_increase_at=client.price_increase_at,
    )


def churn_risks(e: RiskEvidence, policy: RiskPolicy, *, now: datetime) -> list[str]:
    """The churn-risk rules that fire now, by name (``CHURN_RISK_RULES``)."""
    reasons: list[str] = []
    if e.late_payments_recent >= policy.late_payments or e.overdue_open > 0:
        reasons.append("late_payments")
    dropped = (
        e.engagement_before >= policy.engagement_min_before
        and Decimal(e.engagement_recent) < Decimal(e.engagement_before) * policy.engagement_drop_share
    )
    if dropped or e.unsubscribed_recent:
        reasons.append("engagement_drop")
    if e.complaints_recent > 0:
        reasons.append("complaints")
    if e.hours_used is not None and e.hours_included and e.hours_used < e.hours_included * policy.underused_share:
        reasons.append("hours_underused")
    if e.price_increase_at is not None and now < e.price_increase_at <= now + timedelta(days=policy.price_notice_days):
        reasons.append("price_increase_ahead")
    return reasons

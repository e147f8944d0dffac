"""How the health score is computed: six factors 0-100, their weighted mean, its band and trend.

Everything the score reads is here: which timeline events count and over which window, the
engagement score and its weights, the penalties, the tenure scale, the band thresholds. The
numbers are defaults of ``HealthPolicy``; settings change them (``RETENTION_HEALTH_*``,
``RETENTION_ENGAGEMENT_*``, ``RETENTION_BAND_*``, ``RETENTION_TREND_*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

FACTORS = ("punctuality", "failures", "complaints", "engagement", "tenure", "scope")
BANDS = ("red", "yellow", "green")
DEFAULT_WEIGHTS: Mapping[str, int] = {
    "punctuality": 30,
    "failures": 15,
    "complaints": 20,
    "engagement": 10,
    "tenure": 15,
    "scope": 10,
}

# A client's timeline, as the rules read it: (event type, when, detail).
TimelineEntry = tuple[str, datetime, Mapping[str, Any]]
ENGAGEMENT_TYPES = ("email.opened", "email.clicked")
# The timeline events the health and churn-risk rules count.
ASSESSED_TYPES = ("payment.succeeded", "feedback.received", *ENGAGEMENT_TYPES)

# The timeline events behind each factor (GET /clients/{id} lists the latest of them).
FACTOR_EVENTS: Mapping[str, tuple[str, ...]] = {
    "punctuality": ("payment.succeeded", "invoice.overdue"),
    "failures": ("payment.failed", "dunning.state_changed"),
    "complaints": ("feedback.received",),
    "engagement": ("email.opened", "email.clicked", "lead.unsubscribed", "feedback.received"),
    "tenure": ("deposit.cleared",),
    "scope": ("deal.change_requested",),
}
FACTOR_EXPLANATIONS: Mapping[str, str] = {
    "punctuality": "share of payments received by their due date",
    "failures": "100 minus a penalty per failed payment attempt",
    "complaints": "100 minus a penalty per complaint",
    "engagement": "opens and clicks in the recent window, survey score, unsubscribes (neutral with no signal)",
    "tenure": "days as a client over the days for full marks",
    "scope": "100 minus a penalty per out-of-scope request",
}


def _named(name: str, setting: str) -> AliasChoices:
    """A policy field, also given by its settings name (``RETENTION_`` + that name, upper case)."""
    return AliasChoices(name, setting)


class HealthPolicy(BaseModel):
    """Weights, penalties, windows and thresholds of the health score."""

    model_config = ConfigDict(frozen=True)

    # Relative weights of the factors (they need not sum to 100); a factor left out weighs 0.
    weights: Mapping[str, int] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    failure_penalty: int = Field(
        default=25,
        ge=0,
        le=100,
        validation_alias=_named("failure_penalty", "health_failure_penalty"),
        description="points lost per failed payment",
    )
    complaint_penalty: int = Field(
        default=25,
        ge=0,
        le=100,
        validation_alias=_named("complaint_penalty", "health_complaint_penalty"),
        description="points lost per complaint",
    )
    scope_penalty: int = Field(
        default=10,
        ge=0,
        le=100,
        validation_alias=_named("scope_penalty", "health_scope_penalty"),
        description="points lost per out-of-scope request",
    )
    tenure_full_days: int = Field(
        default=365,
        ge=1,
        validation_alias=_named("tenure_full_days", "health_tenure_full_days"),
        description="days as a client for full tenure marks",
    )
    # The engagement score: a base, points per open and click of the recent window, a survey
    # answer's score above or below the neutral band, minus an unsubscribe.
    engagement_window_days: int = Field(
        default=30, ge=1, description="recent window of opens, clicks and complaints (the churn-risk rules too)"
    )
    engagement_placeholder: int = Field(
        default=50,
        ge=0,
        le=100,
        validation_alias=_named("engagement_placeholder", "health_engagement_placeholder"),
        description="engagement of a client never heard from (no open, click, unsubscribe or survey answer)",
    )
    engagement_base: int = Field(default=30, ge=0, le=100, description="engagement of a client heard from")
    engagement_open_points: int = Field(default=10, ge=0, le=100, description="points per open in the window")
    engagement_click_points: int = Field(default=20, ge=0, le=100, description="points per click in the window")
    engagement_promoter_from: int = Field(default=9, ge=0, le=10, description="a survey score this high adds points")
    engagement_promoter_points: int = Field(default=20, ge=0, le=100)
    engagement_detractor_upto: int = Field(default=6, ge=0, le=10, description="a survey score this low takes points")
    engagement_detractor_points: int = Field(default=20, ge=0, le=100)
    engagement_unsubscribe_points: int = Field(default=30, ge=0, le=100, description="points an unsubscribe takes")
    # Bands: red below yellow_from, green from green_from.
    yellow_from: int = Field(default=51, ge=1, le=100, validation_alias=_named("yellow_from", "band_yellow_from"))
    green_from: int = Field(default=76, ge=1, le=100, validation_alias=_named("green_from", "band_green_from"))
    # The trend compares the score with the score this long ago; a move under the threshold is flat.
    trend_days: int = Field(default=30, ge=1, description="the health trend compares with the score this long ago")
    trend_threshold: int = Field(default=5, ge=1, le=100, description="points the score must move to trend up or down")

    @model_validator(mode="before")
    @classmethod
    def _weight_alone(cls, data: Any) -> Any:
        """One factor's weight by its settings name (``health_weight_tenure``): the others keep theirs."""
        if isinstance(data, dict):
            alone = {f: data[f"health_weight_{f}"] for f in FACTORS if f"health_weight_{f}" in data}
            if alone:
                return {**data, "weights": {**(data.get("weights") or DEFAULT_WEIGHTS), **alone}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> HealthPolicy:
        unknown = set(self.weights) - set(FACTORS)
        if unknown:
            raise ValueError(f"unknown health factors: {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("health weights cannot be negative")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one health weight must be positive")
        if self.yellow_from >= self.green_from:
            raise ValueError("band_yellow_from must be below band_green_from")
        return self

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.engagement_window_days)


# --------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class HealthEvidence:
    """What we have seen of a client, counted."""

    payments_on_time: int = 0
    payments_late: int = 0
    payments_failed: int = 0
    complaints: int = 0
    feedback_count: int = 0
    client_since: datetime | None = None
    # Engagement over the recent window; ``engagement_seen`` False means no signal ever (neutral).
    engagement_seen: bool = False
    opens_recent: int = 0
    clicks_recent: int = 0
    unsubscribed: bool = False
    last_feedback_score: int | None = None
    out_of_scope_requests: int = 0


class ClientRecord(Protocol):
    """What the health score reads of a client's record (the ``clients`` row)."""

    @property
    def payments_on_time(self) -> int: ...
    @property
    def payments_late(self) -> int: ...
    @property
    def payments_failed(self) -> int: ...
    @property
    def complaints(self) -> int: ...
    @property
    def feedback_count(self) -> int: ...
    @property
    def became_client_at(self) -> datetime | None: ...
    @property
    def engagement_seen(self) -> bool: ...
    @property
    def unsubscribed_at(self) -> datetime | None: ...
    @property
    def last_feedback_score(self) -> int | None: ...
    @property
    def out_of_scope_requests(self) -> int: ...


def count_events(
    events: Iterable[TimelineEntry],
    types: tuple[str, ...],
    *,
    since: datetime,
    until: datetime | None = None,
    where: Mapping[str, object] | None = None,
) -> int:
    """Timeline events of ``types`` in [since, until) whose detail has every ``where`` value."""
    return sum(
        1
        for event_type, at, detail in events
        if event_type in types
        and at >= since
        and (until is None or at < until)
        and all((detail or {}).get(k) == v for k, v in (where or {}).items())
    )


def health_evidence(
    client: ClientRecord, events: Iterable[TimelineEntry], policy: HealthPolicy, *, now: datetime
) -> HealthEvidence:
    """The evidence the score weighs: the record's counts, and the opens and clicks of the
    engagement window (``events``: the client's timeline of ``ASSESSED_TYPES``)."""
    timeline = list(events)
    since = now - policy.window
    return HealthEvidence(
        payments_on_time=client.payments_on_time,
        payments_late=client.payments_late,
        payments_failed=client.payments_failed,
        complaints=client.complaints,
        feedback_count=client.feedback_count,
        client_since=client.became_client_at,
        engagement_seen=client.engagement_seen or client.unsubscribed_at is not None,
        opens_recent=count_events(timeline, ("email.opened",), since=since),
        clicks_recent=count_events(timeline, ("email.clicked",), since=since),
        unsubscribed=client.unsubscribed_at is not None,
        last_feedback_score=client.last_feedback_score,
        out_of_scope_requests=client.out_of_scope_requests,
    )


# --------------------------------------------------------------------------- the score


@dataclass(frozen=True)
class Factor:
    """One factor of the score: its value 0-100, its weight and the counts behind it."""

    name: str
    value: int  # 0-100, higher is healthier
    weight: int
    evidence: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "weight": self.weight, "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class Health:
    """A score 0-100, its band and the factors it weighs."""

    score: int
    band: str
    factors: tuple[Factor, ...]

    def factors_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: f.as_dict() for f in self.factors}


def band_of(score: int, *, yellow_from: int = 51, green_from: int = 76) -> str:
    """red 0-50, yellow 51-75, green 76-100 with the default thresholds."""
    if score >= green_from:
        return "green"
    if score >= yellow_from:
        return "yellow"
    return "red"


def _clamp(value: int) -> int:
    return max(0, min(100, value))


def _round(value: Decimal) -> int:
    # Half up, as people round scores (round() on a Decimal is half-even).
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tenure_days(client_since: datetime | None, *, now: datetime) -> int:
    """Whole days as a client (0 for a prospect)."""
    if client_since is None:
        return 0
    return max(0, (now - client_since).days)


def assess_health(evidence: HealthEvidence, policy: HealthPolicy, *, now: datetime) -> Health:
    """Weighted mean of factor values 0-100, rounded half up, and its band.

    With no evidence a factor about bad behaviour scores full marks: a new client has not
    failed us yet, and a neutral start keeps the first real signal visible."""
    paid = evidence.payments_on_time + evidence.payments_late
    punctuality = 100 if paid == 0 else _round(Decimal(100 * evidence.payments_on_time) / paid)
    days = tenure_days(evidence.client_since, now=now)
    values = {
        "punctuality": Factor(
            "punctuality", punctuality, 0, {"on_time": evidence.payments_on_time, "late": evidence.payments_late}
        ),
        "failures": Factor(
            "failures",
            _clamp(100 - policy.failure_penalty * evidence.payments_failed),
            0,
            {"failed": evidence.payments_failed},
        ),
        "complaints": Factor(
            "complaints",
            _clamp(100 - policy.complaint_penalty * evidence.complaints),
            0,
            {"complaints": evidence.complaints, "feedback": evidence.feedback_count},
        ),
        "engagement": engagement(evidence, policy),
        "tenure": Factor("tenure", _clamp(100 * days // policy.tenure_full_days), 0, {"days": days}),
        "scope": Factor(
            "scope",
            _clamp(100 - policy.scope_penalty * evidence.out_of_scope_requests),
            0,
            {"out_of_scope_requests": evidence.out_of_scope_requests},
        ),
    }
    factors = tuple(
        Factor(name, values[name].value, int(policy.weights.get(name, 0)), values[name].evidence) for name in FACTORS
    )
    total_weight = sum(f.weight for f in factors)
    score = _round(sum((Decimal(f.value * f.weight) for f in factors), Decimal(0)) / total_weight)
    return Health(score, band_of(score, yellow_from=policy.yellow_from, green_from=policy.green_from), factors)


def engagement(evidence: HealthEvidence, policy: HealthPolicy) -> Factor:
    """The engagement score: opens and clicks of the recent window, a survey score above or
    below the neutral band, minus an unsubscribe. A client we never heard from scores the
    neutral placeholder, not zero."""
    counts = {
        "opens": evidence.opens_recent,
        "clicks": evidence.clicks_recent,
        "unsubscribed": int(evidence.unsubscribed),
    }
    if not evidence.engagement_seen and evidence.last_feedback_score is None:
        return Factor("engagement", _clamp(policy.engagement_placeholder), 0, counts)
    value = (
        policy.engagement_base
        + policy.engagement_open_points * evidence.opens_recent
        + policy.engagement_click_points * evidence.clicks_recent
    )
    score = evidence.last_feedback_score
    if score is not None:
        counts["last_feedback_score"] = score
        if score >= policy.engagement_promoter_from:
            value += policy.engagement_promoter_points
        elif score <= policy.engagement_detractor_upto:
            value -= policy.engagement_detractor_points
    if evidence.unsubscribed:
        value -= policy.engagement_unsubscribe_points
    return Factor("engagement", _clamp(value), 0, counts)


def trend(score: int | None, past: int | None, *, threshold: int = 5) -> dict[str, Any]:
    """Direction of the score against the score ``trend_days`` ago (or the first one known)."""
    if score is None or past is None:
        return {"direction": "unknown", "delta": None, "since_score": past}
    delta = score - past
    direction = "up" if delta >= threshold else ("down" if delta <= -threshold else "flat")
    return {"direction": direction, "delta": delta, "since_score": past}

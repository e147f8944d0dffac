"""Engagement and feedback: one engagement score 0-100 (opens, clicks, replies and feedback,
decaying over time), when it makes a person sales-ready, whose reply a person should answer,
and which answers are complaints.

Pure: every function takes values (including "now") and returns decisions. The weights, the
half-life and the threshold are a policy the service's settings provide (``EngagementPolicy``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

# The defaults of the settings (docs/design.md, "Business rules": numbers are settings).
POINTS: Mapping[str, int] = {"open": 5, "click": 15, "reply": 40, "feedback": 10}
HALF_LIFE = timedelta(days=30)
SALES_READY_THRESHOLD = 50


class EngagementPolicy(Protocol):
    """What the score reads (the settings' ``engagement`` group provides it)."""

    @property
    def points(self) -> Mapping[str, int]: ...

    @property
    def half_life(self) -> timedelta: ...

    @property
    def sales_ready_threshold(self) -> int: ...


@dataclass(frozen=True)
class Engagement:
    """An engagement policy as plain values."""

    points: Mapping[str, int] = field(default_factory=lambda: dict(POINTS))
    half_life: timedelta = HALF_LIFE
    sales_ready_threshold: int = SALES_READY_THRESHOLD


DEFAULT_ENGAGEMENT = Engagement()


def engagement_after(
    score: int, since: datetime | None, *, now: datetime, kind: str, policy: EngagementPolicy = DEFAULT_ENGAGEMENT
) -> int:
    """The engagement score 0-100 after one more signal (``open``, ``click``, ``reply``,
    ``feedback``); it halves every ``half_life`` without one."""
    decayed = score
    if since is not None and now > since:
        decayed = int(score * 0.5 ** ((now - since) / policy.half_life))
    return max(0, min(100, decayed + policy.points.get(kind, 0)))


def becomes_sales_ready(score: int, *, threshold: int, already: bool) -> bool:
    """Sales readiness is announced once: the first time the score reaches the threshold."""
    return not already and score >= threshold


@dataclass(frozen=True)
class Engaged:
    """A person's engagement after one more signal: the new score, and the reason to announce
    them sales-ready when this signal made them so (None otherwise)."""

    score: int
    sales_ready_reason: str | None


def engage(
    score: int,
    since: datetime | None,
    *,
    now: datetime,
    kind: str,
    sales_ready: bool,
    policy: EngagementPolicy = DEFAULT_ENGAGEMENT,
) -> Engaged:
    """One more signal from a person: their new score, and whether it makes them sales-ready
    (``sales_ready``: they already were, which is announced once)."""
    new = engagement_after(score, since, now=now, kind=kind, policy=policy)
    threshold = policy.sales_ready_threshold
    if not becomes_sales_ready(new, threshold=threshold, already=sales_ready):
        return Engaged(new, None)
    return Engaged(new, f"engagement {new} reached {threshold} (last: {kind})")


def is_high_value(*, tier: str | None, segment: str | None, sales_ready: bool) -> bool:
    """A reply a person should answer themselves today: a good client or a hot prospect."""
    return tier in ("best", "good") or segment == "ideal" or sales_ready


_COMPLAINT_WORDS = re.compile(
    r"complain|disappoint|terribl|awful|unacceptable|worst|angry|refund|rude|broken|not happy|poor",
    re.IGNORECASE,
)


def is_answer(score: int | None, comment: str | None) -> bool:
    """A survey answer says something: a score (0-10) or a comment."""
    return score is not None or bool(comment)


def is_complaint(score: int | None, comment: str | None) -> bool:
    """A detractor score (0-6) or a comment that reads like a complaint. Flagged and counted,
    never dropped: a complaint is the most useful feedback there is."""
    return (score is not None and score <= 6) or bool(comment and _COMPLAINT_WORDS.search(comment))


def raises_complaint(complaint: bool, *, replaces_complaint: bool) -> bool:
    """Whether an answer raises a complaint: it is one, and the earlier answer it replaces (if
    any) was none, so a complaint is counted once."""
    return complaint and not replaces_complaint

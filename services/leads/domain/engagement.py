"""Engagement: one score per lead, 0-100, kept apart from fit.

Each signal (an open, a click, a reply, feedback, a human taking over) adds its weight in
points (the weights are settings: ``EngagementPolicy``); points fade, half of them gone after
the half-life, and the score is the points held now, capped at 100. Nurture keeps a score of
its own for sending; leads' score is this one (see ``EngagementPolicy.lifted_by_nurture`` for
the one place nurture's figure counts)."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

ENGAGEMENT_CAP = Decimal(100)


def decayed(points: Decimal, *, since: datetime | None, now: datetime, half_life_days: float) -> Decimal:
    """Engagement points fade: half of them are gone after ``half_life_days``."""
    if since is None or points <= 0:
        return max(points, Decimal(0))
    days = (now - since).total_seconds() / 86400
    if days <= 0:
        return points
    factor = Decimal(repr(math.pow(0.5, days / half_life_days)))
    return (points * factor).quantize(Decimal("0.0001"))


def engage(
    points: Decimal, *, since: datetime | None, at: datetime, weight: Decimal, half_life_days: float
) -> tuple[Decimal, datetime]:
    """Add ``weight`` points happening ``at``; returns the new points and their reference time.
    An event older than the reference (out of order) counts for what is left of it now."""
    if since is None or at >= since:
        base = decayed(points, since=since, now=at, half_life_days=half_life_days)
        return min(base + weight, ENGAGEMENT_CAP), at
    late = decayed(weight, since=at, now=since, half_life_days=half_life_days)
    return min(points + late, ENGAGEMENT_CAP), since


def engagement_score(points: Decimal, *, since: datetime | None, now: datetime, half_life_days: float) -> int:
    """The score 0-100: the points held ``now``."""
    value = decayed(points, since=since, now=now, half_life_days=half_life_days)
    return int(min(value, ENGAGEMENT_CAP).to_integral_value())


class EngagementPolicy(BaseModel):
    """Points per signal and how fast they fade (half gone after the half-life)."""

    model_config = ConfigDict(frozen=True)

    half_life_days: float = Field(default=14.0, gt=0)
    open_points: Decimal = Field(default=Decimal("5"), ge=0)
    click_points: Decimal = Field(default=Decimal("10"), ge=0)
    reply_points: Decimal = Field(default=Decimal("25"), ge=0)
    feedback_points: Decimal = Field(default=Decimal("10"), ge=0)
    takeover_points: Decimal = Field(default=Decimal("15"), ge=0)

    def weight(self, signal: str) -> Decimal:
        """The points an event of type ``signal`` adds (none for any other type)."""
        return {
            "email.opened": self.open_points,
            "email.clicked": self.click_points,
            "email.replied": self.reply_points,
            "feedback.received": self.feedback_points,
            "takeover.started": self.takeover_points,
        }.get(signal, Decimal(0))

    def score(self, points: Decimal, *, since: datetime | None, now: datetime) -> int:
        return engagement_score(points, since=since, now=now, half_life_days=self.half_life_days)

    def signal(self, points: Decimal, *, since: datetime | None, at: datetime, kind: str) -> tuple[Decimal, datetime]:
        """The points and their reference time after a signal of type ``kind`` ``at``."""
        return engage(points, since=since, at=at, weight=self.weight(kind), half_life_days=self.half_life_days)

    def merged(
        self,
        kept: Decimal,
        *,
        kept_since: datetime | None,
        duplicate: Decimal,
        duplicate_since: datetime | None,
        now: datetime,
    ) -> tuple[Decimal, datetime]:
        """A merge adds what is left of the duplicate's points now to the kept lead's."""
        left = decayed(duplicate, since=duplicate_since, now=now, half_life_days=self.half_life_days)
        return engage(kept, since=kept_since, at=now, weight=left, half_life_days=self.half_life_days)

    def lifted_by_nurture(
        self, points: Decimal, *, since: datetime | None, now: datetime, reported: int
    ) -> tuple[Decimal, datetime] | None:
        """The lead's points once nurture says it is sales-ready with its own score ``reported``,
        or None when they stay as they are.

        Leads keeps one engagement score. Nurture scores the same person for its own purpose
        (its weights, its decay, signals such as sends that leads never sees) and calls the lead
        sales-ready when its figure crosses its threshold. That figure only ever lifts ours, to
        ``reported`` points as of ``now`` (decaying from then on like any others): a lead sales
        sees as ready must not show a colder score than the one that made it ready. It never
        lowers ours, because the signals leads weighed still happened."""
        if reported > self.score(points, since=since, now=now):
            return Decimal(reported), now
        return None

"""Takeovers that end: a takeover a reply started ends by itself after some business days
(Monday to Friday on the business clock) unless a person extends it; one a person started lasts
until they end it, with a reminder every week it stays open. Pure: "now" is a value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

TakeoverKind = Literal["reply", "person"]
BY_REPLY: TakeoverKind = "reply"
BY_PERSON: TakeoverKind = "person"
# ``takeover.ended``'s ``by`` when a reply's takeover ran out by itself.
ENDED_BY_SYSTEM = "system"

REPLY_DAYS = 5  # business days a reply's takeover lasts (the settings' default)
OPEN_REMINDER = timedelta(days=7)  # a person's takeover: one reminder per week it is open
EXTEND_MAX_DAYS = 60
SATURDAY = 5


def is_business_day(moment: datetime) -> bool:
    return moment.weekday() < SATURDAY


def add_business_days(start: datetime, days: int) -> datetime:
    """``start`` moved by ``days`` business days (negative: back), at the same time of day;
    weekends are stepped over. Zero days from a weekend stays put."""
    step = 1 if days >= 0 else -1
    moment, left = start, abs(days)
    while left:
        moment += timedelta(days=step)
        if is_business_day(moment):
            left -= 1
    return moment


def reply_takeover_ends(started_at: datetime, *, days: int) -> datetime:
    """When a takeover a reply started at ``started_at`` ends by itself."""
    return add_business_days(started_at, days)


def extended_end(ends_at: datetime, *, now: datetime, days: int) -> datetime:
    """The end pushed by ``days`` business days: from the current end, or from now when the
    pass has not caught up with an end already past."""
    return add_business_days(max(ends_at, now), days)


def ending_notice_at(ends_at: datetime) -> datetime:
    """When the owner hears that a reply's takeover is about to end: one business day before."""
    return add_business_days(ends_at, -1)


def open_week(started_at: datetime, *, now: datetime) -> int:
    """How many whole weeks a takeover has been open (0: less than one, no reminder yet)."""
    return max(0, (now - started_at) // OPEN_REMINDER)


@dataclass(frozen=True)
class TakeoverReview:
    """What the scheduled pass does with one open takeover now: end it, tell the owner it is
    about to end, or remind them of a person's takeover still open (``week``)."""

    end: bool = False
    notice: bool = False
    week: int = 0


def review_takeover(kind: str, *, started_at: datetime, ends_at: datetime | None, now: datetime) -> TakeoverReview:
    """The pass's decision for one open takeover."""
    if kind == BY_REPLY and ends_at is not None:
        if ends_at <= now:
            return TakeoverReview(end=True)
        return TakeoverReview(notice=ending_notice_at(ends_at) <= now)
    return TakeoverReview(week=open_week(started_at, now=now))

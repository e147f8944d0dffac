"""Takeovers that end, by hand-computed business days (Monday to Friday on the business clock)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.nurture.domain.takeovers import (
    add_business_days,
    ending_notice_at,
    extended_end,
    open_week,
    reply_takeover_ends,
)

WEDNESDAY = datetime(2030, 1, 9, 15, tzinfo=UTC)


def test_a_reply_takeover_lasts_five_business_days_over_a_weekend() -> None:
    # Wed -> Thu, Fri, (Sat, Sun), Mon, Tue, Wed: the next Wednesday, same time of day.
    assert reply_takeover_ends(WEDNESDAY, days=5) == datetime(2030, 1, 16, 15, tzinfo=UTC)
    # Started on a Saturday: Mon..Fri counts five, so it ends on Friday.
    assert reply_takeover_ends(datetime(2030, 1, 12, 10, tzinfo=UTC), days=5) == datetime(2030, 1, 18, 10, tzinfo=UTC)


def test_the_notice_comes_a_business_day_before_and_an_extension_moves_the_end() -> None:
    monday_end = datetime(2030, 1, 14, 15, tzinfo=UTC)
    assert ending_notice_at(monday_end) == datetime(2030, 1, 11, 15, tzinfo=UTC)  # the Friday before
    assert extended_end(WEDNESDAY, now=WEDNESDAY, days=2) == datetime(2030, 1, 11, 15, tzinfo=UTC)
    # An end already past is extended from now.
    later = datetime(2030, 1, 10, 9, tzinfo=UTC)
    assert extended_end(WEDNESDAY, now=later, days=1) == datetime(2030, 1, 11, 9, tzinfo=UTC)
    assert add_business_days(WEDNESDAY, 0) == WEDNESDAY


def test_a_persons_takeover_is_reminded_once_a_week() -> None:
    assert open_week(WEDNESDAY, now=datetime(2030, 1, 15, tzinfo=UTC)) == 0
    assert open_week(WEDNESDAY, now=datetime(2030, 1, 16, 15, tzinfo=UTC)) == 1
    assert open_week(WEDNESDAY, now=datetime(2030, 1, 24, tzinfo=UTC)) == 2

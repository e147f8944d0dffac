"""Business hours: when a promise to a person (answer a new lead within four hours) is counted.

A deadline counts only working time in the person's own time zone: a lead who writes at 17:30
on a Friday in Dhaka is answered in time on Sunday morning if the agency works Sunday to
Thursday there. Pure: every function takes "now" from its caller (the business clock), so a
simulated clock moves deadlines as it moves everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MONDAY_TO_FRIDAY = (0, 1, 2, 3, 4)
MAX_DAYS = 3660  # a calendar with no working day would otherwise loop forever


@dataclass(frozen=True)
class BusinessHours:
    """Working hours on working days (0 = Monday), in whatever zone a calculation is asked for,
    with the days off the agency keeps."""

    start: time = time(9)
    end: time = time(17)
    days: tuple[int, ...] = MONDAY_TO_FRIDAY
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("business hours must start before they end")
        if not self.days or any(d not in range(7) for d in self.days):
            raise ValueError("business days are weekdays 0 (Monday) to 6 (Sunday), at least one")

    def _window(self, day: date, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
        if day.weekday() not in self.days or day in self.holidays:
            return None
        return datetime.combine(day, self.start, zone), datetime.combine(day, self.end, zone)

    def add(self, at: datetime, hours: float, zone: ZoneInfo) -> datetime:
        """The moment ``hours`` of working time after ``at`` have passed (UTC)."""
        if hours < 0:
            raise ValueError("hours must not be negative")
        left = timedelta(hours=hours)
        local = at.astimezone(zone)
        day = local.date()
        for _ in range(MAX_DAYS):
            window = self._window(day, zone)
            if window is not None:
                opens, closes = window
                begin = max(opens, local)
                if begin < closes:
                    if begin + left <= closes:
                        return (begin + left).astimezone(UTC)
                    left -= closes - begin
            day += timedelta(days=1)
        raise ValueError("no working day in ten years of this calendar")

    def subtract(self, at: datetime, hours: float, zone: ZoneInfo) -> datetime:
        """The moment from which ``hours`` of working time end at ``at`` (UTC): a reminder
        that leaves that much working time before a deadline."""
        if hours < 0:
            raise ValueError("hours must not be negative")
        left = timedelta(hours=hours)
        local = at.astimezone(zone)
        day = local.date()
        for _ in range(MAX_DAYS):
            window = self._window(day, zone)
            if window is not None:
                opens, closes = window
                finish = min(closes, local)
                if opens < finish:
                    if finish - left >= opens:
                        return (finish - left).astimezone(UTC)
                    left -= finish - opens
            day -= timedelta(days=1)
        raise ValueError("no working day in ten years of this calendar")

    def between(self, start: datetime, end: datetime, zone: ZoneInfo) -> timedelta:
        """Working time from ``start`` to ``end`` (zero if ``end`` is not later)."""
        if end <= start:
            return timedelta(0)
        total = timedelta(0)
        # Local wall time throughout, as in add(): a working day is as long as its hours say.
        start, end = start.astimezone(zone), end.astimezone(zone)
        day, last = start.date(), end.date()
        while day <= last:
            window = self._window(day, zone)
            if window is not None:
                opens, closes = window
                begin, finish = max(opens, start), min(closes, end)
                if begin < finish:
                    total += finish - begin
            day += timedelta(days=1)
        return total

"""The bounds a value from outside must keep, at the HTTP edge and in the event contract.

A value past them is refused where it enters, with a 4xx naming the field (or, in an event,
a dead letter with the reason), instead of travelling on until a database column, a date
calculation or a time-zone lookup fails on it with a 500 or stops a whole batch (issue 15).
Money has its own bounds in ``shared/money.py``.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, date, datetime, time
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

# Dates a business can mean: a year 1 or 9999 only ever overflowed a `+ timedelta` (a 500).
EARLIEST = date(1900, 1, 1)
LATEST = date(2200, 12, 31)
DATE_RANGE = f"{EARLIEST.isoformat()} to {LATEST.isoformat()}"
# Counts (employees, offsets, row numbers): below 2^31, so a PostgreSQL INTEGER column and
# SQLite's 64-bit integers both hold it. 2^63 was a 500 ("Python int too large").
MAX_COUNT = 10**9
# The longest IANA key is 32 characters (America/Argentina/ComodRivadavia).
MAX_TIME_ZONE_LENGTH = 64


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone_key(key: str) -> str:
    """``key`` if it names an IANA time zone; ValueError otherwise. A key is looked up in the
    tz database's list, never opened as a path: ``"America"`` opened a directory and raised
    ``IsADirectoryError``, a 100,000-character key raised ``OSError`` 36."""
    if key in _time_zones():
        return key
    raise ValueError(f"unknown time zone {key[:80]!r}: use an IANA key such as Europe/London")


def within_dates(moment: date | datetime, *, name: str) -> date | datetime:
    """``moment`` if its date lies in EARLIEST..LATEST; ValueError naming ``name`` otherwise."""
    day = moment.date() if isinstance(moment, datetime) else moment
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"{name}: {moment.isoformat()} is outside {DATE_RANGE}")
    return moment


TimeZoneKey = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TIME_ZONE_LENGTH, description="IANA time zone", examples=["Europe/London"]),
    AfterValidator(time_zone_key),
]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
# A whole number that may be negative (days late, loyalty points), bounded the same way.
BoundedInt = Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
# A day or a moment a person gives (a signature, a spend period, a price change's date).
Day = Annotated[date, Field(ge=EARLIEST, le=LATEST)]
Moment = Annotated[
    AwareDatetime,
    Field(ge=datetime.combine(EARLIEST, time(), UTC), le=datetime.combine(LATEST, time.max, UTC)),
]

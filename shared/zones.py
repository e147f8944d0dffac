"""A person's time zone, total: any key ZoneInfo cannot read is UTC, so one odd value (an old
event, a row stored before capture validated it) never stops a scheduled pass."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo

UTC = ZoneInfo("UTC")
# The longest IANA key is about 30 characters: a longer one names no zone, and is not worth a
# file lookup (100,000 characters made ZoneInfo raise OSError 36, "file name too long").
_ZONE_KEY_MAX = 64


@lru_cache(maxsize=1024)
def _read_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfo raises more than ZoneInfoNotFoundError and ValueError:
        # IsADirectoryError for "America", OSError for a name too long, ValueError for "../x"...
        return None


def known_zone(name: str | None) -> bool:
    """Whether ``name`` is a time zone ZoneInfo can read (no name is UTC, and known)."""
    if not name:
        return True
    return isinstance(name, str) and len(name) <= _ZONE_KEY_MAX and _read_zone(name) is not None


def zone(name: str | None) -> ZoneInfo:
    """The person's time zone, or UTC where none can be read (callers may report the fallback
    with ``known_zone``)."""
    found = _read_zone(name) if name and known_zone(name) else None
    return found or UTC

"""The one clock business rules read "now" from (docs/design.md, Business rules: Time).

``system``: the wall clock. ``simulated``: the time carried by ``clock.advanced`` events, so a
simulation can run a year in minutes and every scheduled job fires as the clock moves.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class Clock:
    """System clock. Watchers' events are set whenever time jumps (only a simulated clock jumps)."""

    simulated = False

    def __init__(self) -> None:
        self._watchers: list[asyncio.Event] = []

    def watch(self) -> asyncio.Event:
        """An event of the caller's own, set at every jump (the caller clears it)."""
        event = asyncio.Event()
        self._watchers.append(event)
        return event

    def _jumped(self) -> None:
        for event in self._watchers:
            event.set()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance_to(self, moment: datetime) -> bool:
        return False


class SimulatedClock(Clock):
    """Moves only forward, only when told; before the first tick it reads the wall clock."""

    simulated = True

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        self._now = start

    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    def advance_to(self, moment: datetime) -> bool:
        moment = moment.astimezone(UTC)
        if self._now is not None and moment <= self._now:
            return False
        self._now = moment
        self._jumped()
        return True


def make_clock(kind: str) -> Clock:
    return SimulatedClock() if kind == "simulated" else Clock()

"""Letting the event loop breathe during long work that would otherwise never yield."""

from __future__ import annotations

import asyncio
import time


class Pauses:
    """Lets the event loop run other work every few milliseconds of a long batch: SQLite runs
    inline, so without it a batch of 500 events held the loop (HTTP, health checks, the Kafka
    heartbeat) for its whole length. The batch's transaction stays open meanwhile; other
    writers wait for it asynchronously."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s = every_s
        self.last = time.perf_counter()

    async def __call__(self) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            await asyncio.sleep(0)
            self.last = time.perf_counter()

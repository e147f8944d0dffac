"""Long reads (reports, list pages, scrape-time gauges) on a thread of their own, with its own
event loop and its own database connections, so they cannot block the service's event loop.

SQLite runs inline on the loop (shared.sqlite_inline) and asyncpg hands rows back to Python on
it; either way a report that reads and sums thousands of rows held the loop for seconds: ten
parallel `GET /economics` made retention's `/health/live` take 10.8 s. Here the loop only
waits for a future. The thread's Python work still shares the GIL, which CPython hands back
every few milliseconds (and SQLite releases while it steps), so the loop keeps answering.
On SQLite these reads use deferred transactions (a WAL reader never blocks the writers)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from shared.clock import Clock
from shared.db import create_engine
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)
T = TypeVar("T")
Read = Callable[[UnitOfWork], Awaitable[T]]
SWITCH_INTERVAL_S = 0.001


class ReadPool:
    def __init__(self, url: str, *, producer: str, clock: Clock, fallback: UnitOfWorkFactory) -> None:
        self.url = url
        self.producer = producer
        self.clock = clock
        # Until started (an app served without its lifespan, in a test), reads run on the loop.
        self.fallback = fallback
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uow: UnitOfWorkFactory | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    def start(self) -> None:
        if self._thread is not None:
            return
        # The loop thread waits for the GIL at each wake-up while a read computes: CPython's
        # default 5 ms switch interval made a health check wait 15-25 ms behind a report.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._serve, name=f"{self.producer}-reads", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the read pool could not start") from self._error

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            engine = create_engine(self.url, read_only=True)
            self._uow = UnitOfWorkFactory(engine, producer=self.producer, clock=self.clock)
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(engine.dispose())
            loop.close()

    async def run(self, read: Read[T], *, key: Hashable | None = None) -> T:
        """``read(tx)`` in a read-only transaction on the pool's thread; its result must be plain
        data (ORM rows stay behind with their session). Reads with the same ``key`` asked while
        one is running share its answer (a dashboard's ten panels asking for the same figures
        cost one computation, made while they waited)."""
        if key is None:
            return await self._run(read)
        running = self._inflight.get(key)
        if running is None:
            running = self._inflight[key] = asyncio.ensure_future(self._run(read))
            running.add_done_callback(lambda _: self._inflight.pop(key, None))
        # Shielded: a caller that hangs up does not cancel the answer the others wait for.
        return await asyncio.shield(running)

    async def _run(self, read: Read[T]) -> T:
        if self._loop is None or self._uow is None:
            async with self.fallback() as tx:
                return await read(tx)
        uow = self._uow

        async def job() -> T:
            async with uow() as tx:
                result = await read(tx)
                await tx.session.rollback()  # read-only: nothing to commit
                return result

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job(), self._loop))

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(15)
        self._thread = None

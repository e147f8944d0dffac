"""Outbox relay: publishes committed outbox rows with acks=all and marks them sent.

It claims unsent rows rather than reading ``id > last_id`` (which skips rows whose transactions
commit out of order); on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` so several instances can
share one outbox. A relay that dies between publishing and marking publishes again: consumers
absorb it through their inbox. A broker outage only makes it back off and try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from shared.db import OutboxRow, is_postgres
from shared.metrics import PlumbingMetrics

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]


# Publishes started in one turn of the loop (see OutboxRelay._send_all).
SEND_SLICE = 16


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: Publish,
        *,
        metrics: PlumbingMetrics,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        publish_timeout_s: float = 10.0,
        retention: timedelta = timedelta(hours=72),
    ) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.publish = publish
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.publish_timeout_s = publish_timeout_s
        self.retention = retention
        self._wake = asyncio.Event()
        self._backoff = wait_exponential_jitter(multiplier=0.2, max=5.0)
        self._task: asyncio.Task[None] | None = None
        self._last_prune = datetime.min.replace(tzinfo=UTC)
        self._gauges_at = 0.0

    def wake(self) -> None:
        """Called after a commit that emitted events, so publishing does not wait for a poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self.metrics.service}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                while await self.publish_batch() == self.batch_size:
                    pass
                failures = 0
                # The backlog gauges once a second at most (a scrape refreshes them as well):
                # under load the relay wakes after every commit.
                if (now := asyncio.get_running_loop().time()) - self._gauges_at >= 1.0:
                    self._gauges_at = now
                    await self.refresh_gauges()
                await self._prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker or database is away: back off, keep going
                failures += 1
                self.metrics.relay_errors.labels(self.metrics.service).inc()
                delay = self._backoff(_attempt(failures))
                log.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            # asyncio.timeout, not wait_for: on 3.11 a wait_for whose wake-up and cancellation
            # land together swallows the cancellation, and the relay never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows; returns how many were published."""
        # Plain rows, not ORM objects: they are only read, published and marked by id.
        table = OutboxRow.__table__.c
        query = (
            select(table.id, table.event_id, table.topic, table.event_type, table.key, table.payload)
            .where(table.sent_at.is_(None))
            .order_by(table.id)
            .limit(self.batch_size)
        )
        if is_postgres(self.engine):
            # Row locks keep other relay instances off these rows until they are marked.
            async with self.sessions() as session, session.begin():
                rows = list(await session.execute(query.with_for_update(skip_locked=True)))
                sent, failed, first_error = await self._send_all(rows)
                await self._mark(session, sent, failed)
        else:
            # SQLite: one relay per database file; never hold its single write lock while
            # waiting on the broker, or HTTP writes would stall during a broker outage.
            async with self.sessions() as session:
                rows = list(await session.execute(query))
            sent, failed, first_error = await self._send_all(rows)
            async with self.sessions() as session, session.begin():
                await self._mark(session, sent, failed)
        for row in rows:
            if row.id in sent:
                self.metrics.events_published.labels(self.metrics.service, row.topic, row.event_type).inc()
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(rows)} outbox rows not published: {first_error!r}")
        return len(sent)

    async def _send_all(self, rows: Sequence[Any]) -> tuple[set[int], set[int], BaseException | None]:
        """Hand every row to the producer, a few at a time, then wait for all the broker's acks.
        The first step of a publish (FastStream's middlewares, the producer's accumulator) is
        CPU on the loop: 500 started at once ran back to back and held the loop for a quarter
        of a second, so each slice of ``SEND_SLICE`` gets the loop's turn before the next."""
        tasks: list[asyncio.Task[None]] = []
        for start in range(0, len(rows), SEND_SLICE):
            tasks += [asyncio.ensure_future(self._send(row)) for row in rows[start : start + SEND_SLICE]]
            await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        sent = {row.id for row, result in zip(rows, results, strict=True) if result is None}
        failed = {row.id for row, result in zip(rows, results, strict=True) if result is not None}
        first_error = next((r for r in results if r is not None), None)
        return sent, failed, first_error

    async def _mark(self, session, sent: set[int], failed: set[int]) -> None:
        if sent:
            now = datetime.now(UTC)
            await session.execute(update(OutboxRow).where(OutboxRow.id.in_(sent)).values(sent_at=now))
        if failed:
            await session.execute(
                update(OutboxRow).where(OutboxRow.id.in_(failed)).values(attempts=OutboxRow.attempts + 1)
            )

    async def _send(self, row: Any) -> None:
        headers = {"event_type": row.event_type, "event_id": str(row.event_id)}
        async with asyncio.timeout(self.publish_timeout_s):
            await self.publish(row.topic, row.key, row.payload, headers)

    async def refresh_gauges(self) -> None:
        async with self.sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.sent_at.is_(None))
                )
            ).one()
        self.metrics.outbox_backlog.labels(self.metrics.service).set(count)
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        self.metrics.outbox_oldest_age.labels(self.metrics.service).set(age)

    async def _prune(self) -> None:
        """Forget rows sent long ago, so the outbox's cost does not grow with history."""
        now = datetime.now(UTC)
        if now - self._last_prune < timedelta(minutes=10):
            return
        self._last_prune = now
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(OutboxRow).where(OutboxRow.sent_at.is_not(None), OutboxRow.sent_at < now - self.retention)
            )


def _attempt(number: int) -> RetryCallState:
    """Tenacity's record of the ``number``-th attempt, as its wait strategies read it (the relay
    runs its own loop, so nothing else of the record is used)."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = number
    return state

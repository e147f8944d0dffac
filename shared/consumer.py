"""Batch consumption with an inbox and dead letters.

One transaction per batch; offsets are committed (by FastStream's ACK after the handler) only
after it. A message that is not a valid envelope, or whose payload does not fit its type, goes
to ``<topic>.dlq`` with the reason and origin in headers. An unknown type is skipped and
counted. If a batch fails, its events are applied one by one, so one poison event is retried a
few times and dead-lettered instead of stalling its partition. Infrastructure errors (database
or broker away) are raised, so FastStream rewinds and the batch is read again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ValidationError

from shared import topics
from shared.errors import DomainError
from shared.events import EVENT_TYPES, Envelope, Payload
from shared.jobs import infrastructure
from shared.metrics import PlumbingMetrics
from shared.pauses import Pauses
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
# Loads what a batch's events will touch (say every lead they name) in a few queries before the
# handlers run, so the handlers find it in the session instead of one query per event.
Prefetch = Callable[[UnitOfWork, list[Envelope]], Awaitable[None]]


class RejectEvent(DomainError):
    """Raised by a handler for an event that can never apply (goes to the DLQ at once)."""


def _is_transient(exc: BaseException) -> bool:
    """The database or broker away: the batch is read again later. One event's odd value is
    not (``ZoneInfo("America")`` raises IsADirectoryError, an OSError): shared.jobs decides
    the same way for scheduled jobs."""
    return infrastructure(exc) or isinstance(exc, socket.gaierror)


@dataclass
class _Item:
    record: ConsumerRecord
    event: Envelope
    payload: BaseModel


class DeadLetters:
    """Sends a message to its topic's dead-letter topic with why and where it came from."""

    def __init__(self, broker: KafkaBroker, *, service: str, metrics: PlumbingMetrics) -> None:
        self.broker = broker
        self.service = service
        self.metrics = metrics

    async def send(self, record: ConsumerRecord, *, reason: str, error: str, attempts: int = 1) -> None:
        headers = {
            "x-dlq-reason": reason,
            "x-dlq-error": error[:2000],
            "x-origin-topic": record.topic,
            "x-origin-partition": str(record.partition),
            "x-origin-offset": str(record.offset),
            "x-attempts": str(attempts),
            "x-consumer-group": self.service,
            "x-failed-at": datetime.now(UTC).isoformat(),
        }
        await self.broker.publish(record.value or b"", topic=topics.dlq(record.topic), key=record.key, headers=headers)
        self.metrics.dead_letters.labels(self.service, record.topic, reason).inc()
        log.warning("dead-lettered %s[%s]@%s: %s: %s", record.topic, record.partition, record.offset, reason, error)


class BatchConsumer:
    """Applies a batch of records through the service's handlers, exactly once each."""

    def __init__(
        self,
        *,
        service: str,
        uow: UnitOfWorkFactory,
        handlers: dict[str, Handler],
        dead_letters: DeadLetters,
        metrics: PlumbingMetrics,
        max_attempts: int = 3,
        prefetch: Prefetch | None = None,
    ) -> None:
        unknown = set(handlers) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"handlers for event types not in the contract: {sorted(unknown)}")
        self.service = service
        self.uow = uow
        self.handlers = handlers
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.prefetch = prefetch

    def _count(self, record: ConsumerRecord, event_type: str, outcome: str) -> None:
        self.metrics.events_consumed.labels(self.service, record.topic, event_type, outcome).inc()

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        items: list[_Item] = []
        pause = Pauses()
        for record in records:
            item = await self._parse(record)
            if item is not None:
                items.append(item)
            await pause()
        if not items:
            return
        started = time.perf_counter()
        try:
            async with self.uow() as tx:
                await tx.load_applied(item.event.event_id for item in items)
                if self.prefetch is not None and len(items) > 1:
                    await self.prefetch(tx, [i.event for i in items if not await tx.already_applied(i.event.event_id)])
                outcomes = []
                for item in items:
                    outcomes.append(await self._apply(tx, item))
                    await pause()
        except Exception as exc:
            if _is_transient(exc):
                await asyncio.sleep(0.5)  # FastStream rewinds; do not spin while the database is away
                raise
            log.info("batch of %d failed (%r); applying one by one", len(items), exc)
            outcomes = [await self._apply_alone(item) for item in items]
        for item, outcome in zip(items, outcomes, strict=True):
            self._count(item.record, item.event.type, outcome)
        self.metrics.batch_seconds.labels(self.service).observe(time.perf_counter() - started)

    async def _parse(self, record: ConsumerRecord) -> _Item | None:
        try:
            event = Envelope.model_validate_json(record.value or b"")
        except ValidationError as exc:
            await self.dead_letters.send(record, reason="invalid_envelope", error=_short(exc))
            self._count(record, "invalid", "dead_lettered")
            return None
        known = EVENT_TYPES.get(event.type)
        if known is None or known.topic != record.topic:
            log.info("skipping unknown event type %r on %s", event.type, record.topic)
            self._count(record, "unknown", "unknown_type")
            return None
        if event.type not in self.handlers:
            self._count(record, event.type, "ignored")
            return None
        try:
            payload: Payload = event.payload()
        except ValidationError as exc:
            await self.dead_letters.send(record, reason="invalid_payload", error=_short(exc))
            self._count(record, event.type, "dead_lettered")
            return None
        return _Item(record, event, payload)

    async def _apply(self, tx: UnitOfWork, item: _Item) -> str:
        if await tx.already_applied(item.event.event_id):
            return "duplicate"
        tx.cause = item.event
        await self.handlers[item.event.type](tx, item.event, item.payload)
        tx.mark_applied(item.event)
        return "applied"

    async def _apply_alone(self, item: _Item) -> str:
        error: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self.uow() as tx:
                    return await self._apply(tx, item)
            except DomainError as exc:
                await self.dead_letters.send(item.record, reason="rejected", error=str(exc), attempts=attempt)
                return "dead_lettered"
            except Exception as exc:
                if _is_transient(exc):
                    raise
                error = exc
                log.exception("applying %s %s failed (attempt %d)", item.event.type, item.event.event_id, attempt)
                await asyncio.sleep(0.05 * 2**attempt)
        await self.dead_letters.send(item.record, reason="handler_error", error=repr(error), attempts=self.max_attempts)
        return "dead_lettered"


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()[:10])

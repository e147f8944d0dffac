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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ValidationError

from shared import topics
from shared.crypto import KeyRing
from shared.errors import DomainError
from shared.events import EVENT_TYPES, Envelope, LeadErased, Payload
from shared.jobs import infrastructure
from shared.key_fold import KeyFold
from shared.metrics import PlumbingMetrics
from shared.pauses import Pauses
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope, Any], Awaitable[None]]
# Loads what a batch's events will touch (say every lead they name) in a few queries before the
# handlers run, so the handlers find it in the session instead of one query per event.
Prefetch = Callable[[UnitOfWork, list[Envelope]], Awaitable[None]]


# A key unknown once the keys topic is folded to its end is waited for this long before it is
# taken as lost (its record may be published a moment after the event it seals arrived).
KEY_GRACE_S = 2.0


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
    erase: uuid.UUID | None = None  # the person to treat as erased (their key is gone)


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
        keyring: KeyRing | None = None,
        on_shredded: Handler | None = None,
        key_fold: KeyFold | None = None,
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
        # Opens sealed personal fields; an event whose person's key is gone is applied with
        # placeholders, then ``on_shredded`` (the service's erasure) treats the person as erased.
        self.keyring = keyring
        self.on_shredded = on_shredded
        self.key_fold = key_fold

    def _count(self, record: ConsumerRecord, event_type: str, outcome: str) -> None:
        self.metrics.events_consumed.labels(self.service, record.topic, event_type, outcome).inc()

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        envelopes: list[tuple[ConsumerRecord, Envelope | ValidationError]] = []
        for record in records:
            try:
                envelopes.append((record, Envelope.model_validate_json(record.value or b"")))
            except ValidationError as exc:
                envelopes.append((record, exc))
        if self.keyring is not None:
            await self._await_keys([e for _, e in envelopes if isinstance(e, Envelope) and e.sealed is not None])
        await self._apply_batch(envelopes)

    async def _await_keys(self, sealed: list[Envelope]) -> None:
        """Wait until the people's keys of ``sealed`` are folded (the keys fold runs on its own),
        at most ``CLIENTFLOW_KEY_WAIT_S``; once the fold has read the keys topic to its end, a
        key still unknown after a short grace is lost (``KeyRing.open`` then shreds the event)."""
        if not sealed or self.keyring is None:
            return
        key_ids = {e.sealed.key_id for e in sealed if e.sealed is not None}
        await self.keyring.load(self.uow.sessions, key_ids)
        waiting = self.keyring.pending(sealed)
        counted = False
        while waiting:
            if self.key_fold is not None and await self.key_fold.caught_up():
                # The whole keys topic is folded and the key is not there: lost, not late
                # (after a short grace for a key published a moment before its event).
                waiting -= self.keyring.missing_for(waiting, KEY_GRACE_S)
                if not waiting:
                    return
            if not counted:
                self.metrics.key_waits.labels(self.service).inc()
                counted = True
            if self.key_fold is not None:
                # Woken the moment the fold commits what it read (a key usually arrives a few
                # milliseconds after its event): a fixed 0.1 s poll was most of a new person's
                # first hop.
                await self.key_fold.progress(0.1)
            else:
                await asyncio.sleep(0.1)
            await self.keyring.load(self.uow.sessions, waiting)
            waiting = self.keyring.pending(sealed)

    async def _apply_batch(self, envelopes: list[tuple[ConsumerRecord, Envelope | ValidationError]]) -> None:
        items: list[_Item] = []
        pause = Pauses()
        for record, event in envelopes:
            item = await self._parse(record, event)
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

    async def _parse(self, record: ConsumerRecord, parsed: Envelope | ValidationError) -> _Item | None:
        if isinstance(parsed, ValidationError):
            await self.dead_letters.send(record, reason="invalid_envelope", error=_short(parsed))
            self._count(record, "invalid", "dead_lettered")
            return None
        event = parsed
        known = EVENT_TYPES.get(event.type)
        if known is None or known.topic != record.topic:
            log.info("skipping unknown event type %r on %s", event.type, record.topic)
            self._count(record, "unknown", "unknown_type")
            return None
        if event.type not in self.handlers:
            self._count(record, event.type, "ignored")
            return None
        erase: uuid.UUID | None = None
        if event.sealed is not None and self.keyring is not None:
            key_id = event.sealed.key_id
            event = self.keyring.open(event)
            if event.shredded:
                subject = self.keyring.subject_of(key_id)
                reason = "lost" if subject is None else "destroyed"
                self.metrics.events_shredded.labels(self.service, reason).inc()
                # A lost key is taken as the event's person's (a referral's key names someone else).
                erase = subject if subject is not None else (event.lead_id if event.type != "referral.made" else None)
                if erase != event.lead_id:
                    erase = None
        try:
            payload: Payload = event.payload()
        except ValidationError as exc:
            await self.dead_letters.send(record, reason="invalid_payload", error=_short(exc))
            self._count(record, event.type, "dead_lettered")
            return None
        return _Item(record, event, payload, erase)

    async def _apply(self, tx: UnitOfWork, item: _Item) -> str:
        if await tx.already_applied(item.event.event_id):
            return "duplicate"
        tx.cause = item.event
        await self.handlers[item.event.type](tx, item.event, item.payload)
        if item.erase is not None and self.on_shredded is not None:
            # The person's key is gone here: whatever this event brought of them goes too.
            await self.on_shredded(tx, item.event, LeadErased(requested_at=item.event.occurred_at))
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

"""Unit of work: state, outbox rows and inbox marks commit together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, AsyncSessionTransaction, async_sessionmaker

from shared.access.context import CURRENT_ACTOR, system_actor
from shared.clock import Clock
from shared.db import InboxRow, OutboxRow
from shared.events import PERSONAL, Envelope, Payload, make_event, topic_of

if TYPE_CHECKING:
    from shared.crypto import KeyRing

# Written as plain rows (one multi-row INSERT per table and transaction), never read back.
_OUTBOX = cast(Table, OutboxRow.__table__)
_INBOX = cast(Table, InboxRow.__table__)


class UnitOfWork:
    """One database transaction. ``emit`` records an event in the outbox; it is published by
    the relay only after the commit, so nothing is published that was not committed."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        producer: str,
        clock: Clock,
        cause: Envelope | None = None,
        keyring: KeyRing | None = None,
    ) -> None:
        self.session = session
        self.producer = producer
        self.clock = clock
        self.cause = cause
        self.keyring = keyring
        self.emitted: list[Envelope] = []
        # What was emitted, written to the outbox just before the commit, once the personal
        # fields are sealed with their person's key (with a key ring: one lookup per transaction).
        self._outbox: list[tuple[Envelope, str, bytes, uuid.UUID | None]] = []
        self._applied: set[uuid.UUID] = set()
        self._checked: set[uuid.UUID] = set()
        # Inbox marks, written with the outbox rows in one multi-row INSERT each just before the
        # commit: no ORM object per event (they were a third of a batch's flush).
        self._inbox: list[dict[str, Any]] = []
        # What a use case reads once per transaction rather than once per event of a batch
        # (a small configuration table, say); whoever writes such a value drops its entry.
        self.memo: dict[str, Any] = {}
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (never after a rollback)."""
        if callback not in self._after_commit:
            self._after_commit.append(callback)

    def now(self) -> datetime:
        """Now, from the one clock."""
        return self.clock.now()

    def emit(
        self,
        event_type: str,
        payload: Payload,
        *,
        lead_id: uuid.UUID | None,
        key: str | None = None,
        seal_for: uuid.UUID | None = None,
        first: bool = False,
    ) -> Envelope:
        """Record ``event_type`` in the outbox. Its ``actor`` is whoever acts now (the person of
        the HTTP request), else the system. ``key`` replaces the Kafka key (the person by default)
        for events about something else, say one token on the compacted people topic. Personal
        fields (``shared.events.PERSONAL``) are sealed with the key of ``seal_for`` (by default
        the lead); ``first`` puts the row before the transaction's others (a key before what
        it seals)."""
        event = make_event(
            event_type,
            payload,
            producer=self.producer,
            occurred_at=self.clock.now(),
            lead_id=lead_id,
            cause=self.cause,
            actor=CURRENT_ACTOR.get() or system_actor(self.producer),
        )
        kafka_key = key.encode() if key is not None else event.key
        subject = (seal_for or lead_id) if event_type in PERSONAL else None
        if self.keyring is None:
            subject = None  # nothing to seal with
        if first:
            self._outbox.insert(0, (event, event_type, kafka_key, subject))
        else:
            self._outbox.append((event, event_type, kafka_key, subject))
        self.emitted.append(event)
        return event

    async def flush_outbox(self) -> None:
        """Seal the personal fields of what was emitted, then write the outbox rows and the
        inbox marks (called just before the commit; an event about a person already erased
        loses its personal fields). Each table gets one multi-row INSERT, in emission order."""
        if self._outbox:
            pending = [(event, subject) for event, _, _, subject in self._outbox if subject is not None]
            wire: dict[uuid.UUID, Envelope] = {}
            if pending:
                assert self.keyring is not None
                # May emit person_key.created (at the front of the outbox) for a person without a key.
                sealed = await self.keyring.seal_all(self, pending)
                wire = {event.event_id: done for (event, _), done in zip(pending, sealed, strict=True)}
            entries, self._outbox = self._outbox, []
            now = self.clock.now()
            rows = [
                {
                    "event_id": event.event_id,
                    "topic": topic_of(event.type),
                    "event_type": event.type,
                    "key": kafka_key,
                    "payload": wire.get(event.event_id, event).model_dump_json().encode(),
                    "created_at": now,
                }
                for event, _type, kafka_key, _subject in entries
            ]
            await self.session.execute(insert(_OUTBOX), rows)
        if self._inbox:
            marks, self._inbox = self._inbox, []
            await self.session.execute(insert(_INBOX), marks)

    async def destroy_keys(self, subjects: Iterable[uuid.UUID], *, reason: str = "erasure") -> list[str]:
        """Destroy the people's data keys (erasure): every event sealed with them becomes unreadable."""
        if self.keyring is None:
            return []
        return await self.keyring.destroy(self, subjects, reason=reason)

    async def load_applied(self, event_ids: Iterable[uuid.UUID]) -> None:
        """Read which of a batch's events were applied before, in one query per 500 ids rather
        than one per event (the per-event inbox lookup was a large share of a batch's cost)."""
        ids = [i for i in dict.fromkeys(event_ids) if i not in self._applied and i not in self._checked]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self._applied.update(
                await self.session.scalars(select(InboxRow.event_id).where(InboxRow.event_id.in_(chunk)))
            )
            self._checked.update(chunk)

    async def already_applied(self, event_id: uuid.UUID) -> bool:
        if event_id in self._applied:
            return True
        if event_id in self._checked:
            return False
        found = await self.session.scalar(select(InboxRow.event_id).where(InboxRow.event_id == event_id))
        return found is not None

    def mark_applied(self, event: Envelope) -> None:
        self._applied.add(event.event_id)
        self._inbox.append({"event_id": event.event_id, "event_type": event.type, "applied_at": self.clock.now()})


@dataclass
class RequestTransaction:
    """An HTTP write's own transaction, opened by the Idempotency-Key middleware: every unit of
    work in the request joins it (as a savepoint), and it commits once, together with the
    request's stored answer. So a process killed mid-request leaves neither its effects nor its
    key behind, and a request whose effects committed always has its answer to replay."""

    sessions: async_sessionmaker
    session: AsyncSession
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    active: bool = True


REQUEST_TRANSACTION: ContextVar[RequestTransaction | None] = ContextVar("request_transaction", default=None)


class UnitOfWorkFactory:
    """``async with uow() as tx:`` opens a transaction; a clean exit commits and wakes the relay."""

    def __init__(self, engine: AsyncEngine, *, producer: str, clock: Clock) -> None:
        self.engine = engine
        self.producer = producer
        self.clock = clock
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self.after_commit: list[Callable[[], None]] = []
        # Seals personal fields in what is emitted (set by the service runtime).
        self.keyring: KeyRing | None = None
        # The one way a service counts what happened: each committed event, once, whichever
        # path (HTTP, consumer, scheduled job) emitted it. Never called after a rollback.
        self.on_emitted: list[Callable[[Envelope], None]] = []

    def count_emitted(self, counter: Callable[[Envelope], None]) -> None:
        """Call ``counter`` with every event a transaction emitted, once it committed."""
        self.on_emitted.append(counter)

    def __call__(self, cause: Envelope | None = None) -> _Scope:
        return _Scope(self, cause)


class _Scope:
    def __init__(self, factory: UnitOfWorkFactory, cause: Envelope | None) -> None:
        self.factory = factory
        self.cause = cause
        self.tx: UnitOfWork | None = None
        self.request: RequestTransaction | None = None
        self.savepoint: AsyncSessionTransaction | None = None

    async def __aenter__(self) -> UnitOfWork:
        request = REQUEST_TRANSACTION.get()
        if request is not None and request.active and request.sessions is self.factory.sessions:
            self.request = request
            self.savepoint = await request.session.begin_nested()
            session = request.session
        else:
            session = self.factory.sessions()
            await session.begin()
        self.tx = UnitOfWork(
            session,
            producer=self.factory.producer,
            clock=self.factory.clock,
            cause=self.cause,
            keyring=self.factory.keyring,
        )
        return self.tx

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.tx is not None
        if self.request is not None:
            await self._exit_request(exc_type)
            return
        session = self.tx.session
        try:
            if exc_type is None:
                await self.tx.flush_outbox()
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
        if exc_type is None:
            for callback in self._callbacks():
                callback()

    def _callbacks(self) -> list[Callable[[], None]]:
        """What runs once the transaction committed: its own callbacks, then (if it emitted)
        the counters of what it emitted and the factory's (waking the relay)."""
        assert self.tx is not None
        callbacks = list(self.tx._after_commit)
        if self.tx.emitted:
            emitted = list(self.tx.emitted)
            callbacks += [_counting(counter, emitted) for counter in self.factory.on_emitted]
            callbacks += self.factory.after_commit
        return callbacks

    async def _exit_request(self, exc_type: type[BaseException] | None) -> None:
        """Inside an HTTP write: release or roll back the savepoint; the callbacks wait for the
        request's commit."""
        assert self.tx is not None and self.request is not None and self.savepoint is not None
        if exc_type is not None:
            await self.savepoint.rollback()
            return
        try:
            await self.tx.flush_outbox()
            await self.savepoint.commit()
        except BaseException:
            await self.savepoint.rollback()
            raise
        self.request.after_commit.extend(c for c in self._callbacks() if c not in self.request.after_commit)


def _counting(counter: Callable[[Envelope], None], emitted: list[Envelope]) -> Callable[[], None]:
    def count() -> None:
        for event in emitted:
            counter(event)

    return count

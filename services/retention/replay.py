"""Rebuild retention's store from the topics' history (``clientflow replay retention``).

Every topic retention reads, and its own (``retention``, ``cancellations``: the record of
what it decided), is read from offset 0 up to the end offsets seen at the start, in the
business order of the events (``occurred_at``), into a fresh database through the same
handlers the live consumer uses, with the clock set to each event's time. The events the
handlers emit on the way were published the first time: the rebuilt outbox is marked sent.

Notes on clients are written over HTTP and their text is never published (it is personal
data), so no topic holds them: the replay copies them from the store it rebuilds
(``settings.database_url``) when that is another database (``copy_notes``). Manual tiers come
back from ``client.tier_set_manually``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from sqlalchemy import func, inspect, select, update

from services.retention import subscribers
from services.retention.app import MIGRATIONS
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import Client, ClientNote
from shared import topics
from shared.broker import read_to_end, topic_partitions
from shared.clock import SimulatedClock
from shared.crypto import KeyRing
from shared.db import OutboxRow, create_engine
from shared.events import EVENT_TYPES, Envelope, PersonKeyCreated, PersonKeyDestroyed
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """What a replay read, applied, skipped (not retention's) and rejected, from which topics."""

    read: int = 0
    applied: int = 0
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    notes: int = 0  # copied from the store rebuilt (notes are never published)
    keys: int = 0  # person keys folded from the keys topic (live and destroyed)
    shredded: int = 0  # events read without their person's key (erased people): no personal data


QUIET_S = 1.0


async def read_history(bootstrap: str, topics: list[str]) -> list[tuple[str, int, int, Envelope | None]]:
    """Every record now on ``topics``, from offset 0 to the end seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[tuple[str, int, int, Envelope | None]] = []
    try:
        partitions = [tp for topic in topics for tp in await topic_partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        for record in await read_to_end(consumer, partitions, quiet_s=QUIET_S):
            try:
                event: Envelope | None = Envelope.model_validate_json(record.value or b"")
            except ValueError:
                event = None
            records.append((record.topic, record.partition, record.offset, event))
    finally:
        await consumer.stop()
    return records


async def fold_keys(bootstrap: str, uow: UnitOfWorkFactory, keyring: KeyRing) -> int:
    """Fold the ``keys`` topic into the rebuilt store as compaction leaves it: the last record
    of each key id (a destroyed key stays destroyed). Returns how many key ids it holds."""
    last: dict[str, Envelope] = {}
    for _topic, _part, _offset, event in await read_history(bootstrap, [topics.KEYS]):
        if event is None or event.type not in ("person_key.created", "person_key.destroyed"):
            continue
        key_id = str(event.data.get("key_id"))
        if last.get(key_id) is None or last[key_id].type != "person_key.destroyed":
            last[key_id] = event
    async with uow() as tx:
        await keyring.fold(
            tx,
            [
                PersonKeyCreated.model_validate(event.data)
                if event.type == "person_key.created"
                else PersonKeyDestroyed.model_validate(event.data)
                for event in last.values()
            ],
        )
    await keyring.load(uow.sessions, last)
    return len(last)


async def replay(
    settings: Settings, *, database_url: str, progress: Callable[[int, int], None] | None = None
) -> ReplayReport:
    """Rebuild into ``database_url`` (must be empty of clients); returns what was done."""
    await upgrade_async(MIGRATIONS, database_url)
    engine = create_engine(database_url)
    clock = SimulatedClock()
    uow = UnitOfWorkFactory(engine, producer=settings.service_name, clock=clock)
    report = ReplayReport()
    try:
        async with uow.sessions() as session:
            if await session.scalar(select(func.count()).select_from(Client)):
                raise RuntimeError(f"{database_url} already holds clients: replay rebuilds into a fresh database")
        ctx = Context(settings=settings, metrics=RetentionMetrics(CollectorRegistry(), uow.sessions))
        handlers = {**subscribers.handlers_for(ctx), **subscribers.own_handlers()}
        report.topics = sorted({EVENT_TYPES[t].topic for t in handlers})
        # The people's keys first, as a compacted topic keeps them: the last record of each key
        # id. An erased person's key is destroyed, so their events come back without their
        # personal data (the rebuilt store never holds it) and with every amount and date.
        keyring = KeyRing(settings.master_key_ring(), wait_s=0.0, make_keys=False)
        uow.keyring = keyring  # what the handlers emit on the way is sealed (or stripped) too
        report.keys = await fold_keys(settings.kafka_bootstrap_servers, uow, keyring)
        history = await read_history(settings.kafka_bootstrap_servers, report.topics)
        report.read = len(history)
        order = {topic: i for i, topic in enumerate(report.topics)}
        usable = [
            (topic, part, offset, e)
            for topic, part, offset, e in history
            if e is not None and e.type in handlers and EVENT_TYPES[e.type].topic == topic
        ]
        report.skipped = report.read - len(usable)
        usable.sort(key=lambda r: (r[3].occurred_at, order[r[0]], r[1], r[2]))
        for index, (_topic, _part, _offset, event) in enumerate(usable):
            assert event is not None
            clock.advance_to(event.occurred_at)
            if event.sealed is not None:
                event = keyring.open(event)
                report.shredded += event.shredded
            try:
                async with uow(event) as tx:
                    if await tx.already_applied(event.event_id):
                        continue
                    await handlers[event.type](tx, event, event.payload())
                    tx.mark_applied(event)
                report.applied += 1
            except Exception as exc:  # the live consumer dead-lettered these: so does the replay
                report.rejected.append(f"{event.type} {event.event_id}: {exc}")
            if progress:
                progress(index + 1, len(usable))
        async with uow.sessions() as session, session.begin():
            await session.execute(
                update(OutboxRow).where(OutboxRow.sent_at.is_(None)).values(sent_at=_last(usable) or clock.now())
            )
        if settings.database_url != database_url:
            report.notes = await copy_notes(settings.database_url, uow)
    finally:
        await engine.dispose()
    return report


async def copy_notes(source_url: str, uow: UnitOfWorkFactory) -> int:
    """Copy the notes of the clients the rebuild knows from the store at ``source_url`` (notes
    come over HTTP and are never published). Returns how many were copied."""
    source = create_engine(source_url)
    try:
        async with source.connect() as conn:
            if not await conn.run_sync(lambda sync: inspect(sync).has_table(ClientNote.__tablename__)):
                return 0
            rows = (await conn.execute(select(ClientNote.__table__))).mappings().all()
    finally:
        await source.dispose()
    copied = 0
    async with uow.sessions() as session, session.begin():
        known = set(await session.scalars(select(Client.lead_id)))
        for row in rows:
            if row["lead_id"] in known and await session.get(ClientNote, row["id"]) is None:
                session.add(ClientNote(**dict(row)))
                copied += 1
    return copied


def _last(usable: list) -> datetime | None:
    return usable[-1][3].occurred_at if usable else None


def fresh_sqlite_url(settings: Settings) -> str:
    """A new SQLite database under the data directory to replay into."""
    path = (settings.data_dir / f"retention-replay-{uuid.uuid4().hex[:8]}.db").resolve()
    return f"sqlite+aiosqlite:///{path}"

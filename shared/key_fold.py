"""Each service instance folds the compacted ``keys`` topic into its own ``person_keys`` table
(shared.crypto), with the position it reached kept in the same database and written in the
same transaction as the keys: not in a consumer group. So a store always holds every key up to
the position it says (a fresh or restored database reads the topic from where it stands, from
the start if new), and a consumer that meets a key it does not know can tell "not folded yet"
(the fold is behind the topic's end) from "lost" (the fold has read the whole topic)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from shared import topics
from shared.broker import topic_partitions
from shared.crypto import KeyRing
from shared.db import StateRow
from shared.events import Envelope, PersonKeyCreated, PersonKeyDestroyed
from shared.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)

_OFFSETS = "keys.offsets"


class KeyFold:
    def __init__(
        self, bootstrap: str, uow: UnitOfWorkFactory, keyring: KeyRing, *, fetch_max_wait_ms: int = 100
    ) -> None:
        self.bootstrap = bootstrap
        self.uow = uow
        self.keyring = keyring
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._applied = asyncio.Event()  # set (and replaced) each time the fold commits a batch
        self._folding = False  # records read from the topic and not committed yet

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keys-fold")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def caught_up(self) -> bool:
        """Whether the fold has read the ``keys`` topic to its end as the broker sees it now."""
        consumer = self._consumer
        if consumer is None or not self._ready.is_set() or self._folding:
            return False
        try:
            ends = await consumer.end_offsets(self._partitions)
            positions = [await consumer.position(tp) for tp in self._partitions]
            # At or past the end the broker reports (Tansu's high watermark can lag a fetch).
            return all(position >= ends[tp] for position, tp in zip(positions, self._partitions, strict=True))
        except Exception:  # the broker is away: not known to be caught up
            return False

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("keys fold: %s; starting again in %.1fs", exc, delay)
                self._ready.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # A position past the end (a broker that restarted empty, as the embedded one does)
            # starts again from the beginning of what the topic holds now.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            client_id="clientflow-keys-fold",
        )
        await consumer.start()
        try:
            self._partitions = await topic_partitions(consumer, topics.KEYS)
            consumer.assign(self._partitions)
            stored = await self._stored()
            ends = await consumer.end_offsets(self._partitions)
            for tp in self._partitions:
                at = stored.get(tp.partition)
                if at is None or at > ends[tp]:
                    # New, or the broker holds less than this store read (a broker that restarted
                    # empty, as the embedded one does): read what the topic holds from its start.
                    # (A high watermark that lags makes it read again what it had: only slower.)
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, at)
            self._consumer = consumer
            self._ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                records = [r for batch in batches.values() for r in batch]
                if records:
                    # Read but not yet in the table: not caught up until they are (the
                    # consumer's position already counts them).
                    self._folding = True
                    try:
                        await self._apply(records, {tp: await consumer.position(tp) for tp in self._partitions})
                    finally:
                        self._folding = False
        finally:
            self._consumer = None
            await consumer.stop()

    async def _stored(self) -> dict[int, int]:
        async with self.uow.sessions() as session:
            value = await session.scalar(select(StateRow.value).where(StateRow.name == _OFFSETS))
        return {int(p): int(o) for p, o in json.loads(value).items()} if value else {}

    async def _apply(self, records: list, positions: dict[TopicPartition, int]) -> None:
        folded: list[PersonKeyCreated | PersonKeyDestroyed] = []
        for record in records:
            try:
                event = Envelope.model_validate_json(record.value or b"")
                if event.type == "person_key.created":
                    folded.append(PersonKeyCreated.model_validate(event.data))
                elif event.type == "person_key.destroyed":
                    folded.append(PersonKeyDestroyed.model_validate(event.data))
            except ValueError as exc:
                log.warning("keys fold: skipping %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc)
        async with self.uow() as tx:
            await self.keyring.fold(tx, folded)
            row = await tx.session.get(StateRow, _OFFSETS)
            value = json.dumps({str(tp.partition): offset for tp, offset in positions.items()})
            if row is None:
                tx.session.add(StateRow(name=_OFFSETS, value=value))
            else:
                row.value = value
        self._pulse()

    def _pulse(self) -> None:
        """Wake whoever waits in :meth:`progress` (a new event for the next wait)."""
        applied, self._applied = self._applied, asyncio.Event()
        applied.set()

    async def progress(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait is the point
        """Wait until the fold next commits a batch of what it read from the keys topic, at
        most ``timeout`` seconds; True if it did. A consumer waiting for a key wakes the moment
        the key is in the table instead of polling for it."""
        applied = self._applied
        try:
            # asyncio.timeout, not wait_for: wait_for (3.11) returns instead of raising when the
            # caller is cancelled the moment the event is set, and a consumer must stop.
            async with asyncio.timeout(timeout):
                await applied.wait()
        except TimeoutError:
            return False
        return True

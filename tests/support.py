"""Test support: infrastructure discovery, running a service in-process, reading topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from cryptography.exceptions import InvalidTag
from fastapi import FastAPI
from sqlalchemy import select

from shared.crypto import MasterKeys, open_sealed
from shared.db import OutboxRow
from shared.embedded import free_port
from shared.events import Envelope, Payload, PersonKeyCreated, PersonKeyDestroyed, make_event, topic_of
from shared.settings import ServiceSettings
from shared.topics import KEYS

API_KEY = "test-api-key"
T = TypeVar("T")


def docker_answers() -> bool:
    """True when a Docker engine answers (testcontainers can then start real servers)."""
    try:
        import docker  # type: ignore[import-untyped]  # the docker SDK ships no type information

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def same_row_ids(patch: Any, make: Callable[[], uuid.UUID]) -> None:
    """Every module's ``time_ordered_id`` (the ids handlers give the rows they make) replaced by
    ``make``, so two runs of one story make the same ids. Events keep their own (random) ids."""
    for name, module in list(sys.modules.items()):
        ours = name.startswith(("services.", "shared.")) and name not in ("shared.events", "shared.ids")
        if ours and hasattr(module, "time_ordered_id"):  # the original, or an earlier call's
            patch.setattr(module, "time_ordered_id", make)


def service_settings(settings_cls: type, *, bootstrap: str, database_url: str, **overrides: Any) -> Any:
    """Settings for a service under test: short group timeouts, a fixed API key."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "database_url": database_url,
        "api_key": API_KEY,
        "environment": "test",
        "port": free_port(),
        "consumer_session_timeout_ms": 2000,
        "consumer_heartbeat_interval_ms": 300,
        "relay_poll_interval_s": 0.1,
        "broker_connect_timeout_s": 20,
        "topic_partitions": 3,
    }
    values.update(overrides)
    return settings_cls(**values)


@dataclass
class RunningService:
    app: FastAPI
    url: str
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@asynccontextmanager
async def run_service(app: FastAPI, port: int) -> AsyncIterator[RunningService]:
    """Serve ``app`` with uvicorn on ``port`` inside this event loop (lifespan included)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error
        if time.monotonic() > deadline:
            raise TimeoutError("service did not start in 60 s")
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
        try:
            yield RunningService(app, url, client)
        finally:
            server.should_exit = True
            await task


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1) -> T:  # noqa: ASYNC109 - the tests' keyword; the poll keeps its own deadline and message
    """Poll ``check`` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last:
        raise last
    raise TimeoutError(f"condition not met within {timeout}s")


async def until(check: Callable[[], Awaitable[T]], *, timeout: float, interval: float = 0.3) -> T:  # noqa: ASYNC109 - the tests' keyword; the poll keeps its own deadline and message
    """Poll ``check`` until it returns a truthy value or the deadline passes; returns its last
    value (falsy on time-out), so the caller asserts with its own message."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


class TopicReader:
    """Reads events from topics with a plain aiokafka consumer, not the services' code. It reads
    the ``keys`` topic too and, holding the (development) master key as the services do, opens
    the personal fields sealed in what it returns; ``sealed=True`` returns events as sent."""

    def __init__(self, bootstrap: str, *topics: str, master: MasterKeys | None = None) -> None:
        self.wanted_keys = KEYS in topics
        self.master = master or ServiceSettings().master_key_ring()
        self.data_keys: dict[str, bytes | None] = {}
        self.consumer = AIOKafkaConsumer(
            *dict.fromkeys((*topics, KEYS)),
            bootstrap_servers=bootstrap,
            group_id=f"test-reader-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )
        self.seen: list[tuple[Any, Envelope | None]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def _poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                try:
                    event = Envelope.model_validate_json(record.value)
                except ValueError:
                    event = None
                if record.topic == KEYS and event is not None:
                    self._fold_key(event)
                    if not self.wanted_keys:
                        continue
                self.seen.append((record, event))

    def _fold_key(self, event: Envelope) -> None:
        if event.type == "person_key.created":
            created = PersonKeyCreated.model_validate(event.data)
            if self.data_keys.get(created.key_id, b"") is not None:
                # Another system's master key (KeyError, InvalidTag): its events stay sealed.
                with contextlib.suppress(KeyError, InvalidTag):
                    self.data_keys[created.key_id] = self.master.unwrap(created.kek_id, created.key_id, created.wrapped)
        elif event.type == "person_key.destroyed":
            self.data_keys[PersonKeyDestroyed.model_validate(event.data).key_id] = None

    def _opened(self, event: Envelope) -> Envelope:
        if event.sealed is None:
            return event
        key = self.data_keys.get(event.sealed.key_id)
        return open_sealed(event, key) if key else event

    def events(
        self, event_type: str | None = None, lead_id: uuid.UUID | str | None = None, *, sealed: bool = False
    ) -> list[Envelope]:
        found = [
            e
            for _, e in self.seen
            if e is not None
            and (event_type is None or e.type == event_type)
            and (lead_id is None or str(e.lead_id) == str(lead_id))
        ]
        return found if sealed else [self._opened(e) for e in found]

    async def wait_for(
        self,
        event_type: str,
        *,
        lead_id: uuid.UUID | str | None = None,
        count: int = 1,
        timeout: float = 20.0,  # noqa: ASYNC109 - the tests' keyword; the poll keeps its own deadline and message
    ) -> list[Envelope]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event_type, lead_id)
            # Its key may come a moment after a sealed event: wait for it as the services do.
            if len(found) >= count and all(e.sealed is None or e.sealed.key_id in self.data_keys for e in found):
                return found
            await self._poll()
        raise TimeoutError(f"saw {len(self.events(event_type, lead_id))} {event_type}, wanted {count}")

    async def records(self, topic: str, *, count: int, timeout: float = 20.0) -> list[Any]:  # noqa: ASYNC109 - the tests' keyword; the poll keeps its own deadline and message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r, _ in self.seen if r.topic == topic]
            if len(found) >= count:
                return found
            await self._poll()
        raise TimeoutError(f"saw fewer than {count} records on {topic}")


@asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def event(
    event_type: str, payload: Payload, *, lead_id: uuid.UUID | None = None, producer_name: str = "test"
) -> Envelope:
    from datetime import datetime

    return make_event(event_type, payload, producer=producer_name, occurred_at=datetime.now(UTC), lead_id=lead_id)


async def publish(p: AIOKafkaProducer, envelope: Envelope) -> None:
    await p.send_and_wait(topic_of(envelope.type), envelope.model_dump_json().encode(), key=envelope.key)


async def publish_raw(p: AIOKafkaProducer, topic: str, value: bytes, key: bytes | None = None) -> None:
    await p.send_and_wait(topic, value, key=key)


def as_json(response: httpx.Response) -> Any:
    assert response.status_code < 400, f"{response.status_code}: {response.text}"
    return json.loads(response.text)


async def database_state(engine: Any, metadata: Any, *, drop: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """Every row of a service's tables (less the columns in ``drop``, by table) and the events its
    outbox holds, in a form two runs can be compared by (the batching tests: a batch must end
    where its events applied one by one end). People's keys are random by design: their events
    are left out (sealed fields are compared by their placeholders)."""
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).mappings().all()
            hidden = (drop or {}).get(table.name, set())
            out[table.name] = sorted(repr({k: v for k, v in row.items() if k not in hidden}) for row in rows)
        emitted = []
        for payload in await conn.scalars(select(OutboxRow.payload).order_by(OutboxRow.id)):
            e = Envelope.model_validate_json(payload)
            if e.type.startswith("person_key."):
                continue
            emitted.append((e.type, e.lead_id, e.causation_id, e.occurred_at, e.data))
        out["outbox"] = emitted
    return out


def consumer_record(
    value: Envelope | bytes, *, topic: str = "deals", offset: int = 0, key: bytes = b"k"
) -> ConsumerRecord:
    """A record as a consumer's fetch hands it over (partition 0), for tests of the consumer
    without a broker: an envelope as JSON, or raw bytes (a message that is no envelope)."""
    raw = value if isinstance(value, bytes) else value.model_dump_json().encode()
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=raw,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(raw),
        headers=[],
    )

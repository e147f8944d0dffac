"""Outbox relay and inbox consumer against a real SQLite file, with the broker replaced by a
recorder (the real-broker versions are in tests/integration)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from shared import events as ev
from shared.clock import Clock
from shared.consumer import BatchConsumer, RejectEvent
from shared.db import InboxRow, OutboxRow, PlumbingBase, create_engine
from shared.metrics import PlumbingMetrics
from shared.relay import OutboxRelay
from shared.uow import UnitOfWorkFactory
from tests.support import consumer_record

NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plumbing.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def metrics() -> PlumbingMetrics:
    return PlumbingMetrics("test", CollectorRegistry())


def lost(reason: str = "price") -> ev.DealLost:
    return ev.DealLost(deal_id=uuid.uuid4(), reason=reason)


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.failures = failures

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.sent.append((topic, key, value))


async def test_nothing_is_published_that_was_not_committed(engine, metrics) -> None:
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    with pytest.raises(RuntimeError):
        async with uow() as tx:
            tx.emit("deal.lost", lost(), lead_id=uuid.uuid4())
            raise RuntimeError("the use case failed after emitting")
    async with uow() as tx:
        kept = tx.emit("deal.lost", lost("kept"), lead_id=uuid.uuid4())
    recorder = Recorder()
    relay = OutboxRelay(engine, recorder, metrics=metrics)
    assert await relay.publish_batch() == 1
    assert [ev.Envelope.model_validate_json(v).event_id for _, _, v in recorder.sent] == [kept.event_id]
    assert await relay.publish_batch() == 0  # marked sent


async def test_relay_keeps_rows_through_a_broker_outage_and_publishes_them_later(engine, metrics) -> None:
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    for _ in range(5):
        async with uow() as tx:
            tx.emit("deal.lost", lost(), lead_id=uuid.uuid4())
    recorder = Recorder(failures=5)
    relay = OutboxRelay(engine, recorder, metrics=metrics, batch_size=10)
    with pytest.raises(RuntimeError, match="5 of 5 outbox rows not published"):
        await relay.publish_batch()
    assert await relay.publish_batch() == 5
    async with engine.connect() as conn:
        unsent = await conn.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None)))
        attempts = await conn.scalar(select(func.max(OutboxRow.attempts)))
    assert unsent == 0 and attempts == 1
    assert len(recorder.sent) == 5


async def test_relay_claims_unsent_rows_even_when_ids_committed_out_of_order(engine, metrics) -> None:
    """A relay reading `id > last_id` would skip row 1 if row 2 committed (and was published) first."""
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    recorder = Recorder()
    relay = OutboxRelay(engine, recorder, metrics=metrics)
    async with uow() as tx:
        tx.emit("deal.lost", lost("first"), lead_id=uuid.uuid4())
    async with engine.begin() as conn:  # row 1 still unsent, a later row already sent
        await conn.execute(OutboxRow.__table__.update().values(sent_at=None))
    async with uow() as tx:
        tx.emit("deal.lost", lost("second"), lead_id=uuid.uuid4())
    assert await relay.publish_batch() == 2
    reasons = [ev.Envelope.model_validate_json(v).data["reason"] for _, _, v in recorder.sent]
    assert reasons == ["first", "second"]


def record(event: ev.Envelope | bytes, offset: int = 0, topic: str = "deals") -> ConsumerRecord:
    return consumer_record(event, offset=offset, topic=topic)


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, int]] = []

    async def send(self, rec: ConsumerRecord, *, reason: str, error: str, attempts: int = 1) -> None:
        self.sent.append((rec.offset, reason, attempts))


async def test_consumer_applies_once_dead_letters_bad_input_and_skips_unknown_types(engine, metrics) -> None:
    uow = UnitOfWorkFactory(engine, producer="billing", clock=Clock())
    applied: list[str] = []

    async def on_lost(tx: Any, event: ev.Envelope, payload: ev.DealLost) -> None:
        applied.append(payload.reason)
        if payload.reason == "poison":
            raise ValueError("a bug in the handler")
        if payload.reason == "impossible":
            raise RejectEvent("this deal cannot be lost")

    dead = FakeDeadLetters()
    consumer = BatchConsumer(
        service="billing", uow=uow, handlers={"deal.lost": on_lost}, dead_letters=dead, metrics=metrics, max_attempts=3
    )
    good = ev.make_event("deal.lost", lost("good"), producer="leads", occurred_at=NOW)
    bad_payload = ev.make_event("deal.lost", lost(), producer="leads", occurred_at=NOW)
    bad_payload.data["deal_id"] = "not-a-uuid"
    unknown = good.model_copy(update={"type": "deal.teleported", "event_id": uuid.uuid4()})
    ignored = ev.make_event(
        "deal.proposed",
        ev.DealProposed(deal_id=uuid.uuid4(), title="t", kind="project", currency="EUR", total=Decimal(1)),
        producer="leads",
        occurred_at=NOW,
    )
    await consumer.handle(
        [
            record(b"not json", 0),
            record(good, 1),
            record(bad_payload, 2),
            record(unknown, 3),
            record(ignored, 4),
            record(good, 5),
        ]
    )
    assert applied == ["good"]
    assert dead.sent == [(0, "invalid_envelope", 1), (2, "invalid_payload", 1)]

    await consumer.handle([record(good, 6)])  # redelivered later: changes nothing
    assert applied == ["good"]

    poison = ev.make_event("deal.lost", lost("poison"), producer="leads", occurred_at=NOW)
    rejected = ev.make_event("deal.lost", lost("impossible"), producer="leads", occurred_at=NOW)
    after = ev.make_event("deal.lost", lost("after"), producer="leads", occurred_at=NOW)
    await consumer.handle([record(poison, 7), record(rejected, 8), record(after, 9)])
    # the batch failed, so each was applied alone: poison tried 3 times, the rejected one once
    assert (7, "handler_error", 3) in dead.sent and (8, "rejected", 1) in dead.sent
    # poison: once in the failed batch (rolled back), then 3 times alone; "after" once, alone
    assert applied.count("poison") == 4 and applied.count("after") == 1
    async with engine.connect() as conn:
        inbox = await conn.scalar(select(func.count()).select_from(InboxRow))
    assert inbox == 2  # good and after
    sample = metrics.registry.get_sample_value
    assert (
        sample(
            "clientflow_events_consumed_total",
            {"service": "billing", "topic": "deals", "type": "unknown", "outcome": "unknown_type"},
        )
        == 1
    )
    assert (
        sample(
            "clientflow_events_consumed_total",
            {"service": "billing", "topic": "deals", "type": "deal.lost", "outcome": "duplicate"},
        )
        == 2
    )
    assert (
        sample(
            "clientflow_events_consumed_total",
            {"service": "billing", "topic": "deals", "type": "deal.proposed", "outcome": "ignored"},
        )
        == 1
    )

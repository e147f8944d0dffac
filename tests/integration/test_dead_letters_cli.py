"""``clientflow dead-letters``: list and replay on a real broker. Messages are dead-lettered by
the consumers' own ``DeadLetters`` (so the headers are the real ones), into a topic of this
test's own, then listed, replayed once (a second replay sends nothing) and checked on the
origin topic."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from rich.console import Console
from typer.testing import CliRunner

from clientflow import dead_letters_cli
from clientflow.cli import app
from clientflow.dead_letters_cli import REPLAYED_FROM, replay, summarize
from shared import topics
from shared.broker import ensure_topics
from shared.consumer import DeadLetters
from shared.metrics import PlumbingMetrics
from tests.support import consumer_record

pytestmark = pytest.mark.integration


def record(topic: str, offset: int, value: bytes, key: bytes) -> ConsumerRecord:
    return consumer_record(value, topic=topic, offset=offset, key=key)


async def read_from(bootstrap: str, topic: str, start: dict[int, int], *, want: int) -> list[ConsumerRecord]:
    """Records of ``topic`` past ``start`` (partition -> offset), until ``want`` came or 10 s."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in start]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start[tp.partition])
        found: list[ConsumerRecord] = []
        for _ in range(50):
            for batch in (await consumer.getmany(*partitions, timeout_ms=200)).values():
                found.extend(batch)
            if len(found) >= want:
                # a moment more: anything beyond ``want`` would be a resend
                for batch in (await consumer.getmany(*partitions, timeout_ms=1000)).values():
                    found.extend(batch)
                break
        return found
    finally:
        await consumer.stop()


async def ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def test_list_and_replay_once(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = f"dlqtest-{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, partitions=1, names=[origin, topics.dlq(origin)])
    broker = KafkaBroker(kafka_bootstrap)
    await broker.start()
    try:
        metrics = PlumbingMetrics("billing", CollectorRegistry())
        billing = DeadLetters(broker, service="billing", metrics=metrics)
        retention = DeadLetters(broker, service="retention", metrics=PlumbingMetrics("retention", CollectorRegistry()))
        fixable = record(origin, 10, b'{"type": "deal.won"}', b"lead-1")
        garbage = record(origin, 11, b"\x00not json", b"lead-2")
        later = record(origin, 12, b'{"type": "deal.lost"}', b"lead-3")
        await billing.send(fixable, reason="rejected", error="no deal yet")
        await retention.send(fixable, reason="rejected", error="no deal yet")  # same message, another group
        await billing.send(garbage, reason="invalid_envelope", error="message: Invalid JSON")
        await billing.send(later, reason="rejected", error="no deal yet", attempts=1)
    finally:
        await broker.stop()

    [summary] = await summarize(kafka_bootstrap, [origin])
    assert (summary.count, summary.not_replayed) == (4, 4)
    assert summary.reasons == {"rejected": 3, "invalid_envelope": 1}
    assert summary.groups == {"billing": 3, "retention": 1}

    before = await ends(kafka_bootstrap, origin)
    dry = await replay(kafka_bootstrap, origin, reason="rejected", dry_run=True)
    assert (dry.read, dry.replayed, dry.copies, dry.other_reasons) == (4, 2, 1, 1)
    assert await ends(kafka_bootstrap, origin) == before, "a dry run sends nothing"

    done = await replay(kafka_bootstrap, origin, reason="rejected")
    assert (done.replayed, done.copies, done.reasons) == (2, 1, {"rejected": 2})
    sent = await read_from(kafka_bootstrap, origin, before, want=2)
    assert sorted((r.key, r.value) for r in sent) == [(b"lead-1", fixable.value), (b"lead-3", later.value)]
    for r in sent:
        names = dict(r.headers)
        assert not [n for n in names if n.startswith(("x-dlq-", "x-origin-"))], names
        assert names[REPLAYED_FROM].decode().startswith(f"{topics.dlq(origin)}/0@")

    again = await replay(kafka_bootstrap, origin, reason="rejected")
    assert (again.read, again.replayed) == (0, 0), "a second replay sends nothing again"
    assert len(await read_from(kafka_bootstrap, origin, before, want=3)) == 2

    # The command line (in a thread: it runs its own event loop): the table, then a replay of
    # every reason (its own group has sent nothing yet, so it sends all three origins once each).
    monkeypatch.setattr(dead_letters_cli, "console", Console(width=200))  # no ellipsis in the table
    runner = CliRunner()
    listed = await asyncio.to_thread(
        runner.invoke, app, ["dead-letters", "list", "--topic", origin, "--bootstrap", kafka_bootstrap]
    )
    assert listed.exit_code == 0, listed.output
    assert topics.dlq(origin) in listed.output and "rejected 3" in listed.output, listed.output
    replayed = await asyncio.to_thread(
        runner.invoke, app, ["dead-letters", "replay", origin, "--bootstrap", kafka_bootstrap]
    )
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 3" in replayed.output and "1 copies" in replayed.output, replayed.output
    [summary] = await summarize(kafka_bootstrap, [origin])
    assert summary.not_replayed == 0
    missing = await asyncio.to_thread(
        runner.invoke, app, ["dead-letters", "replay", "no-such-topic", "--bootstrap", kafka_bootstrap]
    )
    assert missing.exit_code == 1 and "not on the broker" in missing.output

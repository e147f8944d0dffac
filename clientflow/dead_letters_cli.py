"""``clientflow dead-letters``: see what went to the dead-letter topics, and replay it.

A consumer sends what it cannot apply to ``<topic>.dlq`` with ``x-dlq-reason`` and its origin
in headers (``shared.consumer.DeadLetters``). Once the cause is fixed (a bad deploy rolled back,
a missing record created, a consumer taught a new shape), ``replay TOPIC`` republishes those
messages to their origin topic: same key and value, the dead-letter headers dropped, and
``x-replayed-from`` naming the dead letter. Consumers dedupe on ``event_id`` (their inbox), so
a message some groups had applied and one had dead-lettered changes nothing where it was
already applied.

What was replayed is remembered by a consumer group on the ``.dlq`` topic, committed after
each republish (``clientflow-dead-letters.<topic>``, plus ``.<reason>`` when replaying one
reason, so a replay of one reason does not hide the others from a later replay), so a second
replay does not send again. One bad message is dead-lettered once by every group that reads
it: a replay sends each origin (topic, partition, offset) once.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from rich.console import Console
from rich.table import Table

from shared import topics
from shared.broker import read_to_end, topic_partitions

app = typer.Typer(help="Dead letters: list them per topic, replay them to their origin.", no_args_is_help=True)
console = Console()

# Headers shared.consumer.DeadLetters writes: they describe the failure, not the message.
DLQ_HEADERS = frozenset(
    {"x-origin-topic", "x-origin-partition", "x-origin-offset", "x-attempts", "x-consumer-group", "x-failed-at"}
)
REPLAYED_FROM = "x-replayed-from"


def group_for(topic: str, reason: str | None = None) -> str:
    """The consumer group that remembers how far ``topic``'s dead letters were replayed."""
    return f"clientflow-dead-letters.{topic}" + (f".{reason}" if reason else "")


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in record.headers or ()}


def replay_headers(record: ConsumerRecord) -> list[tuple[str, bytes]]:
    """The headers the message travelled with, without the dead-letter ones, plus where it was."""
    kept = [
        (k, v)
        for k, v in record.headers or ()
        if not k.startswith("x-dlq-") and k not in DLQ_HEADERS and k != REPLAYED_FROM
    ]
    return [*kept, (REPLAYED_FROM, f"{record.topic}/{record.partition}@{record.offset}".encode())]


def _bootstrap(given: str | None) -> str:
    return given or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"


@dataclass
class DeadLetterSummary:
    topic: str
    count: int = 0
    not_replayed: int = 0
    reasons: Counter = field(default_factory=Counter)
    groups: Counter = field(default_factory=Counter)


async def summarize(bootstrap: str, origin_topics: list[str]) -> list[DeadLetterSummary]:
    """Per origin topic: how many dead letters, why, from which groups, and how many are past
    what a full replay (``replay TOPIC`` without ``--reason``) has sent."""
    summaries = []
    for topic in origin_topics:
        dlq = topics.dlq(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_for(topic), enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, dlq)
            consumer.assign(partitions)
            replayed_to = {tp: await consumer.committed(tp) or 0 for tp in partitions}
            await consumer.seek_to_beginning(*partitions)
            summary = DeadLetterSummary(topic)
            for record in await read_to_end(consumer, partitions):
                headers = _headers(record)
                summary.count += 1
                summary.reasons[headers.get("x-dlq-reason", "unknown")] += 1
                summary.groups[headers.get("x-consumer-group", "unknown")] += 1
                if record.offset >= replayed_to[TopicPartition(record.topic, record.partition)]:
                    summary.not_replayed += 1
            summaries.append(summary)
        finally:
            await consumer.stop()
    return summaries


@dataclass
class ReplayReport:
    topic: str
    read: int = 0
    replayed: int = 0
    copies: int = 0  # the same origin message dead-lettered by another group
    other_reasons: int = 0
    reasons: Counter = field(default_factory=Counter)
    dry_run: bool = False


async def replay(bootstrap: str, topic: str, *, reason: str | None = None, dry_run: bool = False) -> ReplayReport:
    """Republish the dead letters of ``<topic>.dlq`` not replayed before (by this group) to
    their origin topic, committing the group's offset after each one; a dry run sends and
    commits nothing."""
    dlq = topics.dlq(topic)
    report = ReplayReport(topic, dry_run=dry_run)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_for(topic, reason),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        partitions = await topic_partitions(consumer, dlq)
        consumer.assign(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        seen: set[tuple[str, str, str]] = set()
        for record in await read_to_end(consumer, partitions):
            report.read += 1
            headers = _headers(record)
            why = headers.get("x-dlq-reason", "unknown")
            origin = headers.get("x-origin-topic", topic)
            where = (
                origin,
                headers.get("x-origin-partition", "?"),
                headers.get("x-origin-offset", f"dlq{record.offset}"),
            )
            if reason is not None and why != reason:
                report.other_reasons += 1
            elif where in seen:
                report.copies += 1
            else:
                seen.add(where)
                report.replayed += 1
                report.reasons[why] += 1
                if not dry_run:
                    await producer.send_and_wait(origin, record.value, key=record.key, headers=replay_headers(record))
            if not dry_run:
                await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
    finally:
        await producer.stop()
        await consumer.stop()
    return report


@app.callback()
def dead_letters() -> None:
    """Dead letters (a group, so `clientflow dead-letters list` reads as it should)."""


@app.command("list")
def list_(
    topic: Annotated[list[str] | None, typer.Option("--topic", help="origin topics (default: all)")] = None,
    bootstrap: Annotated[str | None, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka to read")] = None,
) -> None:
    """Per topic: how many dead letters, why, and how many a replay has not sent yet."""
    try:
        summaries = asyncio.run(summarize(_bootstrap(bootstrap), list(topic or topics.ALL_TOPICS)))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table(title="Dead letters")
    for column in ("topic", "dead letters", "not replayed", "reasons", "dead-lettered by"):
        table.add_column(column, justify="right" if column in ("dead letters", "not replayed") else "left")
    for s in summaries:
        table.add_row(
            topics.dlq(s.topic),
            str(s.count),
            str(s.not_replayed),
            ", ".join(f"{r} {n}" for r, n in s.reasons.most_common()) or "-",
            ", ".join(f"{g} {n}" for g, n in s.groups.most_common()) or "-",
        )
    console.print(table)


@app.command("replay")
def replay_(
    topic: Annotated[str, typer.Argument(help="origin topic whose <topic>.dlq is replayed, e.g. deals")],
    reason: Annotated[str | None, typer.Option(help="only dead letters with this x-dlq-reason")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be sent; send nothing")] = False,
    bootstrap: Annotated[str | None, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka to use")] = None,
) -> None:
    """Republish the dead letters of TOPIC.dlq to their origin topic (once each)."""
    try:
        report = asyncio.run(replay(_bootstrap(bootstrap), topic, reason=reason, dry_run=dry_run))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    verb = "would replay" if dry_run else "replayed"
    reasons = ", ".join(f"{r} {n}" for r, n in report.reasons.most_common()) or "none"
    console.print(
        f"{topics.dlq(topic)}: read {report.read}; {verb} {report.replayed} ({reasons}); "
        f"{report.copies} copies from other groups, {report.other_reasons} with another reason; "
        f"at {datetime.now(UTC).isoformat(timespec='seconds')}"
    )

"""Broker factory, topic creation and the producer the relay and dead-lettering use."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from shared import topics
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


def make_broker(settings: ServiceSettings, registry: CollectorRegistry) -> KafkaBroker:
    """A FastStream Kafka broker that publishes with acks=all and reports to Prometheus."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        client_id=f"clientflow-{settings.service_name}",
        linger_ms=1,
        request_timeout_ms=15_000,
        graceful_timeout=10.0,
        middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name=settings.service_name)],
        description=f"Clientflow {settings.service_name} service",
        log_level=logging.INFO,
    )


async def ensure_topics(bootstrap_servers: str, *, partitions: int, names: list[str] | None = None) -> list[str]:
    """Create the topics and their dead-letter topics; returns the ones it created.

    aiokafka's ``create_topics`` does not raise per-topic errors, so each code is checked.
    """
    wanted = names if names is not None else topics.all_topics_with_dlq()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="clientflow-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=1 if name.startswith(topics.CLOCK) else partitions,
                replication_factor=1,
                # The people topic carries whole states keyed by person or token: compacted, it
                # keeps the last of each forever, so a new service instance can fold it whole.
                topic_configs={"cleanup.policy": "compact"} if name in topics.COMPACTED_TOPICS else {},
            )
            for name in wanted
            if name not in existing
        ]
        if not new:
            return []
        response = await admin.create_topics(new)
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: error {code} {message or ''}".strip())
        return created
    finally:
        await admin.close()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``; refuses a topic the broker does not have."""
    # partitions_for_topic only knows topics already in the metadata cache: fetch them all
    # first, or a topic not seen yet would be left out without a word.
    await consumer.topics()
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise RuntimeError(f"topic {topic!r} is not on the broker")
    return [TopicPartition(topic, p) for p in sorted(known)]


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *, quiet_s: float = 1.0
) -> list[ConsumerRecord]:
    """Every record of ``partitions`` from the consumer's positions to their end.

    End offsets are only a lower bound: the embedded broker (Tansu) can answer a high
    watermark older than what a fetch returns. So read until every partition has reached them
    and nothing more has arrived for ``quiet_s``."""
    ends = await consumer.end_offsets(partitions)
    records: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    quiet_since: float | None = None
    while True:
        batches = await consumer.getmany(*partitions, timeout_ms=200)
        for batch in batches.values():
            records.extend(batch)
        if any(batches.values()):
            quiet_since = None
            continue
        if any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            continue
        quiet_since = quiet_since or loop.time()
        if loop.time() - quiet_since >= quiet_s:
            return records

"""Broker factory, topic creation and the producer the relay and dead-lettering use."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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


# ---- retention of data (docs/design.md, "Retention of data") --------------------------------
DAY_MS = 86_400_000
# Compacted topics (people, keys) carry whole states keyed by person, token or key: the last of
# each is kept forever, so a new service instance can fold it whole. Compacted eagerly: a
# segment rolls every hour and is compacted within the hour after (any dirt at all triggers
# it), so a record superseded by a later one of its key (an erased person's wrapped key, by
# its destruction) is gone from the broker's disks within about two hours.
COMPACTED_TOPIC_CONFIGS: dict[str, str] = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.01",
    "segment.ms": "3600000",
    "max.compaction.lag.ms": "3600000",
}
# Topics kept a fixed time whatever the broker's default (a year in deploy/, for replays): an
# export holds a person's whole record, wanted once and then only by whoever downloads it.
TOPIC_RETENTION_DAYS: dict[str, int] = {"exports": 7}


def topic_configs(name: str, *, dead_letter_retention_days: int | None = None) -> dict[str, str]:
    """The configs a topic is created with (and set to when it exists): a dead-letter topic's
    retention (``CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS``), compaction, a fixed retention; none
    for the business topics, which keep the broker's (``KAFKA_LOG_RETENTION_HOURS``)."""
    if name.endswith(topics.DLQ_SUFFIX):
        if dead_letter_retention_days is None:
            return {}
        return {"cleanup.policy": "delete", "retention.ms": str(dead_letter_retention_days * DAY_MS)}
    if name in topics.COMPACTED_TOPICS:
        return dict(COMPACTED_TOPIC_CONFIGS)
    if name in TOPIC_RETENTION_DAYS:
        return {"cleanup.policy": "delete", "retention.ms": str(TOPIC_RETENTION_DAYS[name] * DAY_MS)}
    return {}


async def _set_configs(admin: AIOKafkaAdminClient, configs: dict[str, dict[str, str]]) -> None:
    """Bring existing topics to their configs where they differ (a setting changed since they
    were made). A broker that cannot alter configs (the embedded Tansu) is told about in the
    log; a start-up never fails on it."""
    if not configs:
        return
    try:
        current = await _describe(admin, list(configs))
    except Exception as exc:  # not answered: try to set them all
        log.info("could not read the configs of existing topics (%s)", exc)
        current = {}
    differ = {
        name: wanted
        for name, wanted in configs.items()
        if any(current.get(name, {}).get(key) != value for key, value in wanted.items())
    }
    if not differ:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=values) for name, values in differ.items()]
    try:
        responses = await admin.alter_configs(resources)
    except Exception as exc:
        log.warning("could not set the retention of topics %s (%s); they keep theirs", ", ".join(sorted(differ)), exc)
        return
    for response in responses:
        for code, message, _type, name in response.resources:
            if code != 0:
                log.warning("could not set the configs of topic %s: error %s %s", name, code, message or "")


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker reports them."""
    found: dict[str, dict[str, str]] = {}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    for response in responses:
        for code, _message, _type, name, entries, *_ in response.resources:
            if code == 0:
                found[name] = {entry[0]: entry[1] for entry in entries}
    return found


# -----------------------------------------------------------------------------------------------


async def ensure_topics(
    bootstrap_servers: str,
    *,
    partitions: int,
    names: list[str] | None = None,
    dead_letter_retention_days: int | None = None,
) -> list[str]:
    """Create the topics and their dead-letter topics, with their retention (``topic_configs``);
    set it on the ones that exist; returns the ones it created.

    aiokafka's ``create_topics`` does not raise per-topic errors, so each code is checked.
    """
    wanted = names if names is not None else topics.all_topics_with_dlq()
    configs = {name: topic_configs(name, dead_letter_retention_days=dead_letter_retention_days) for name in wanted}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="clientflow-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _set_configs(admin, {name: configs[name] for name in wanted if name in existing and configs[name]})
        new = [
            NewTopic(
                name,
                num_partitions=1 if name.startswith(topics.CLOCK) else partitions,
                replication_factor=1,
                topic_configs=configs[name],
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

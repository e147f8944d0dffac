"""Faults for the load scenarios: a background task that SIGKILLs service instances at random
(seeded) moments and restarts them, and a count of the events on the topics."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import topics
from tests.reliability.cluster import Cluster, Instance


@dataclass
class Killer:
    """Kills a random instance every ``gap`` seconds (drawn uniformly from the range) and
    restarts it ``down`` seconds later, without waiting for it to be ready before the next kill
    (so restarts overlap, as they do when a machine reboots under load); goes on until stopped.
    Services are drawn in shuffled rounds, so each is killed about as often as the others; an
    instance still down is never killed again."""

    cluster: Cluster
    rng: random.Random
    gap: tuple[float, float] = (3.0, 8.0)
    down: tuple[float, float] = (0.0, 2.0)
    services: tuple[str, ...] = ("leads", "nurture", "billing", "retention")
    rounds: int | None = None  # stop after killing every service this many times (None: never)
    kills: list[tuple[float, str]] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _restarts: list[asyncio.Task[None]] = field(default_factory=list)
    _down: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="killer")

    async def stop(self) -> None:
        """Stop killing; waits until every killed instance is ready again."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await asyncio.gather(*self._restarts)

    def per_service(self) -> dict[str, int]:
        return {s: sum(i.kills for i in self.cluster.of(s)) for s in self.services}

    async def _run(self) -> None:
        round_: list[str] = []
        while not self._stop.is_set():
            if self.rounds is not None and len(self.kills) >= self.rounds * len(self.services):
                return
            try:
                await asyncio.wait_for(self._stop.wait(), self.rng.uniform(*self.gap))
                return
            except TimeoutError:
                pass
            if not round_:
                round_ = list(self.services)
                self.rng.shuffle(round_)
            service = round_.pop()
            up = [i for i in self.cluster.of(service) if f"{service}-{i.index}" not in self._down]
            if not up:
                round_.insert(0, service)  # still restarting: its turn comes again
                continue
            instance: Instance = self.rng.choice(up)
            name = f"{service}-{instance.index}"
            self.cluster.kill(instance)
            self._down.add(name)
            self.kills.append((time.monotonic(), name))
            self._restarts.append(asyncio.create_task(self._restart(instance, name, self.rng.uniform(*self.down))))

    async def _restart(self, instance: Instance, name: str, after: float) -> None:
        await asyncio.sleep(after)
        self.restart_seconds.append(await self.cluster.restart(instance))
        self._down.discard(name)


async def events_on_topics(bootstrap_servers: str) -> dict[str, int]:
    """How many events each business topic (and all dead-letter topics together) holds: the
    sum of its partitions' end offsets (read twice, the larger kept: the embedded broker can
    answer a slightly old high watermark)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        wanted = [*topics.BUSINESS_TOPICS, *(topics.dlq(t) for t in topics.BUSINESS_TOPICS)]
        partitions = [TopicPartition(t, p) for t in wanted for p in sorted(consumer.partitions_for_topic(t) or ())]
        first = await consumer.end_offsets(partitions)
        await asyncio.sleep(1)
        second = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    counts: dict[str, int] = {}
    for tp in partitions:
        name = "dead letters" if tp.topic.endswith(topics.DLQ_SUFFIX) else tp.topic
        counts[name] = counts.get(name, 0) + max(first[tp], second[tp])
    return counts

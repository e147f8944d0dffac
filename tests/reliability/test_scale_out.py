"""Scenario 3: scale-out. Two instances of every service, each pair one consumer group over
partitioned topics (and sharing its outbox and scheduled work); mid-stream one instance of
every service is killed (SIGKILL). The survivors take its partitions over (the rebalance time
is measured per service) and every effect still exists exactly once."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from tests.reliability.chaos import events_on_topics
from tests.reliability.cluster import SERVICES, Cluster, Instance
from tests.reliability.conftest import FULL
from tests.reliability.lifecycle import Driver, audit_lifecycle, load_figures
from tests.support import API_KEY

pytestmark = [pytest.mark.reliability, pytest.mark.full_only]

SEED = 20261201
PARTITIONS = 6
LEADS = 600 if FULL else 150
CONCURRENCY = 64 if FULL else 24
# A topic each service consumes that carries events all the time while clients flow.
BUSY_TOPIC = {"leads": "engagement", "nurture": "leads", "billing": "deals", "retention": "leads"}


async def consumed_partitions(http: httpx.AsyncClient, instance: Instance, topic: str) -> set[int]:
    """The partitions of ``topic`` this instance has consumed from (its lag gauges)."""
    text = (await http.get(f"{instance.url}/metrics")).text
    found = set()
    for line in text.splitlines():
        if line.startswith("clientflow_consumer_lag{") and f'topic="{topic}"' in line:
            found.add(int(line.split('partition="')[1].split('"')[0]))
    return found


async def time_to_take_over(survivor: Instance, topic: str, killed_at: float, *, within: float = 90) -> float:
    """Seconds from the kill until the survivor consumes from every partition of ``topic``."""
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() - killed_at < within:
            try:
                if await consumed_partitions(http, survivor, topic) == set(range(PARTITIONS)):
                    return time.monotonic() - killed_at
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{survivor.service} did not take over {topic} in {within}s")


@pytest.mark.timeout(600)
async def test_scale_out(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases, instances_per_service=dict.fromkeys(SERVICES, 2), partitions=PARTITIONS)
    await cluster.start()
    try:
        driver = Driver(cluster, patience=90)
        gate = asyncio.Semaphore(CONCURRENCY)
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30, limits=limits) as http:

            async def life(n: int) -> None:
                async with gate:
                    await driver.live(http, n, random.Random(SEED * 1_000_003 + n))

            started = time.monotonic()
            lives = [asyncio.create_task(life(n)) for n in range(LEADS)]
            # Mid-stream: once a third of the clients are in, and both members of every group
            # are consuming (each from only its share of the partitions).
            async with httpx.AsyncClient(timeout=5) as probe:
                while len(driver.clients) < LEADS // 3:  # noqa: ASYNC110 - the Driver keeps a list, not an event
                    await asyncio.sleep(0.2)
                shares = {}
                for service in SERVICES:
                    topic = BUSY_TOPIC[service]
                    shares[service] = [await consumed_partitions(probe, i, topic) for i in cluster.of(service)]
            for service, (first, second) in shares.items():
                assert first and second and first != set(range(PARTITIONS)), (service, first, second)
            victims = {service: cluster.of(service)[0] for service in SERVICES}
            killed_at = time.monotonic()
            for victim in victims.values():
                cluster.kill(victim)
            takeovers = await asyncio.gather(
                *(time_to_take_over(cluster.of(s)[1], BUSY_TOPIC[s], killed_at) for s in SERVICES)
            )
            await asyncio.gather(*lives)
            load_s = time.monotonic() - started
        problems, caught_up = await audit_lifecycle(cluster, driver.clients, timeout=150 if FULL else 90)
        events = await events_on_topics(cluster.broker.bootstrap_servers)
        figures = {
            "instances per service / partitions per topic": f"2 / {PARTITIONS}",
            "leads captured": len(driver.clients),
            "events produced (on the business topics)": sum(v for k, v in events.items() if k != "dead letters"),
            "dead letters": events.get("dead letters", 0),
            "killed mid-stream": ", ".join(f"{s}-0" for s in SERVICES),
            "rebalance: kill to survivor consuming every partition (s)": ", ".join(
                f"{s} {round(t, 1)}" for s, t in zip(SERVICES, takeovers, strict=True)
            ),
            **load_figures(driver, load_s=load_s, caught_up=caught_up, problems=problems),
        }
        report.add("Scale-out (two instances per group, one killed mid-stream)", figures)
        print(figures, problems)
        assert driver.gave_up == [], driver.gave_up[:10]
        assert len(driver.clients) == LEADS
        assert sum(driver.refused.values()) == 0, driver.refusals[:5]
        assert events.get("dead letters", 0) == 0
        assert problems == {"unsettled": 0}, problems
    finally:
        await cluster.stop()

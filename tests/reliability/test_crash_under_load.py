"""Scenario 1: crash under load. Clients flow through the whole lifecycle (capture, nurture,
deals won and lost, deposits, payments, retainers, cancellations) while every service is killed
with SIGKILL at random (seeded) moments, several times, and restarted. Afterwards every effect
exists exactly once in every service."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from tests.reliability.chaos import Killer, events_on_topics
from tests.reliability.cluster import Cluster
from tests.reliability.conftest import FULL
from tests.reliability.lifecycle import Driver, audit_lifecycle, load_figures
from tests.support import API_KEY

pytestmark = pytest.mark.reliability

SEED = 20261130
# Sized on this 2-core machine: under the kills a whole client life (deal, deposit, retainer,
# cancellation) runs at about 8 a second there and a lead that only gets nurtured at about
# three times that (nurture is the busiest process). At full scale 5,000 leads are captured and
# nurtured and three in ten of them go on to an estimate (about 1,500 deals), which keeps the
# scenario near 7 minutes; the short run in `make test` keeps the default mix.
LEADS = 5000 if FULL else 150
DEAL_SHARE = 0.3 if FULL else 0.75
CONCURRENCY = 96 if FULL else 32  # clients living at once
KILL_ROUNDS = 3 if FULL else 1  # every service killed at least this many times during the load
KILL_GAP = (6.0, 12.0) if FULL else (2.0, 4.0)  # seconds between two kills


async def run_load(
    driver: Driver, http: httpx.AsyncClient, *, leads: int, concurrency: int, killer: Killer, rounds: int
) -> int:
    """Start ``leads`` client lives, ``concurrency`` at a time; keep starting more while the
    killer has not yet killed every service ``rounds`` times, so every kill lands under load."""
    gate = asyncio.Semaphore(concurrency)
    lives: list[asyncio.Task] = []

    async def life(n: int) -> None:
        try:
            await driver.live(http, n, random.Random(SEED * 1_000_003 + n), deal_share=DEAL_SHARE)
        finally:
            gate.release()

    n = 0
    while n < leads or min(killer.per_service().values()) < rounds:
        await gate.acquire()
        lives.append(asyncio.create_task(life(n)))
        n += 1
        if n > leads * 3:
            break
    await asyncio.gather(*lives)
    return n


@pytest.mark.timeout(900 if FULL else 300)
async def test_crash_under_load(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    try:
        driver = Driver(cluster, patience=90)
        killer = Killer(cluster, random.Random(SEED), gap=KILL_GAP, rounds=KILL_ROUNDS)
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30, limits=limits) as http:
            started = time.monotonic()
            killer.start()
            try:
                lives = await run_load(
                    driver, http, leads=LEADS, concurrency=CONCURRENCY, killer=killer, rounds=KILL_ROUNDS
                )
            finally:
                await killer.stop()
            load_s = time.monotonic() - started
        problems, caught_up = await audit_lifecycle(cluster, driver.clients, timeout=300 if FULL else 90)
        events = await events_on_topics(cluster.broker.bootstrap_servers)
        clients = driver.clients
        figures = {
            "leads captured": len(clients),
            "mix: no deal / won / lost / cancelled": " / ".join(
                str(x)
                for x in (
                    sum(1 for c in clients if not c.deal_id),
                    sum(1 for c in clients if c.outcome == "won"),
                    sum(1 for c in clients if c.outcome == "lost"),
                    sum(1 for c in clients if c.cancelled),
                )
            ),
            "events produced (on the business topics)": sum(v for k, v in events.items() if k != "dead letters"),
            "events by topic": ", ".join(f"{k} {v}" for k, v in events.items() if k != "dead letters"),
            "dead letters": events.get("dead letters", 0),
            "kills (SIGKILL) by service": ", ".join(f"{s} {k}" for s, k in killer.per_service().items()),
            "restart to ready, median (s)": round(sorted(killer.restart_seconds)[len(killer.restart_seconds) // 2], 1),
            **load_figures(driver, load_s=load_s, caught_up=caught_up, problems=problems),
        }
        report.add("Crash under load (SIGKILL of every service, several times)", figures)
        print(figures, problems)
        assert driver.gave_up == [], driver.gave_up[:10]
        assert len(clients) >= LEADS and lives == len(clients), (lives, len(clients))
        assert min(killer.per_service().values()) >= KILL_ROUNDS, killer.per_service()
        assert sum(driver.refused.values()) == 0, driver.refusals[:5]
        assert events.get("dead letters", 0) == 0
        assert problems == {"unsettled": 0}, problems
    finally:
        await cluster.stop()

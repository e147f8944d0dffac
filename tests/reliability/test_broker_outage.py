"""Scenario 2: the broker frozen (SIGSTOP) mid-stream, then thawed. HTTP writes go on during the
outage; afterwards every effect exists exactly once in every service."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.reliability.cluster import Cluster
from tests.reliability.conftest import FULL
from tests.reliability.lifecycle import Driver, audit
from tests.support import API_KEY

pytestmark = pytest.mark.reliability

OUTAGE_S = 30 if FULL else 8
BEFORE, DURING_RATE = (40, 4) if FULL else (8, 2)  # clients before; new clients a second during


async def test_broker_outage(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    try:
        driver = Driver(cluster)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
            before = [c for c in await asyncio.gather(*(driver.capture_and_sign(http, n) for n in range(BEFORE))) if c]
            await asyncio.gather(*(driver.pay_deposit(http, c) for c in before))

            accepted_before = sum(driver.accepted.values())
            cluster.broker.pause()
            paused_at = time.monotonic()
            during = []
            n = BEFORE
            try:
                while time.monotonic() - paused_at < OUTAGE_S:
                    tick = time.monotonic()
                    batch = await asyncio.gather(*(driver.capture_and_sign(http, n + i) for i in range(DURING_RATE)))
                    during += [c for c in batch if c]
                    n += DURING_RATE
                    await asyncio.sleep(max(0.0, 1 - (time.monotonic() - tick)))
            finally:
                cluster.broker.resume()
            accepted_during = sum(driver.accepted.values()) - accepted_before
            resumed_at = time.monotonic()
            await asyncio.gather(*(driver.pay_deposit(http, c) for c in during))
            problems = await audit(cluster, driver.clients)
            caught_up = time.monotonic() - resumed_at
        figures = {
            "outage (s)": OUTAGE_S,
            "clients before / during the outage": f"{len(before)} / {len(during)}",
            "HTTP writes accepted during the outage": accepted_during,
            "HTTP writes refused (4xx)": sum(driver.refused.values()),
            "time from resume to every effect in place (s)": round(caught_up, 1),
            "lost or duplicated effects": sum(v for k, v in problems.items()),
        }
        report.add("Broker outage (SIGSTOP, then SIGCONT)", figures)
        assert accepted_during >= DURING_RATE * 3 * OUTAGE_S * 0.5
        assert sum(driver.refused.values()) == 0, driver.refusals[:5]
        assert problems == {"unsettled": 0}, problems
    finally:
        await cluster.stop()

"""A broker outage (the embedded broker frozen with SIGSTOP): HTTP writes still succeed, and
their events are published once the broker resumes, none lost and none twice."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter

import pytest

from services.leads.app import create_app
from services.leads.settings import Settings
from shared import topics
from shared.embedded import EmbeddedBroker
from tests.support import TopicReader, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


def lead(n: int) -> dict:
    return {"name": f"Person {n}", "email": f"p{n}-{uuid.uuid4().hex[:8]}@example.org", "channel": "website"}


def backlog(metrics: str) -> float:
    match = re.search(r'^clientflow_outbox_backlog\{service="leads"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else -1.0


async def test_writes_survive_a_broker_outage_and_publish_once(database_url: str, tmp_path) -> None:
    broker = await EmbeddedBroker(log_file=tmp_path / "broker.log").astart()
    try:
        settings = service_settings(Settings, bootstrap=broker.bootstrap_servers, database_url=database_url)
        async with run_service(create_app(settings), settings.port) as leads:
            before = await leads.client.post("/leads", json=lead(0))
            assert before.status_code == 201

            broker.pause()
            try:
                during = [await leads.client.post("/leads", json=lead(n)) for n in range(1, 21)]
                assert [r.status_code for r in during] == [201] * 20
                await asyncio.sleep(3)
                assert backlog((await leads.client.get("/metrics")).text) >= 20
            finally:
                broker.resume()

            expected = {before.json()["lead_id"], *(r.json()["lead_id"] for r in during)}
            async with TopicReader(broker.bootstrap_servers, topics.LEADS) as reader:
                await reader.wait_for("lead.captured", count=21, timeout=60)
                await asyncio.sleep(2)  # anything published twice would arrive by now
                await reader._poll()
                captured = reader.events("lead.captured")
            assert {str(e.lead_id) for e in captured} == expected
            duplicates = [k for k, n in Counter(e.event_id for e in captured).items() if n > 1]
            assert duplicates == []

            async def drained() -> bool:
                return backlog((await leads.client.get("/metrics")).text) == 0

            await eventually(drained, timeout=10)
    finally:
        broker.stop()

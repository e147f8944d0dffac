"""CLIENTFLOW_CLOCK=simulated: business time is what `clock.advanced` says, kept across a restart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from clientflow.cli import _advance
from services.leads.app import create_app
from services.leads.settings import Settings
from tests.support import as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


async def test_services_follow_the_simulated_clock(kafka_bootstrap: str, database_url: str) -> None:
    # The clock topic is shared by the session's broker: go past anything another test set.
    moment = datetime(2300 + uuid.uuid4().int % 600, 3, 1, 9, 30, tzinfo=UTC)
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url, clock="simulated")
    async with run_service(create_app(settings), settings.port) as leads:
        await _advance(kafka_bootstrap, days=0, hours=0, to=moment.isoformat())

        async def follows() -> bool:
            return leads.runtime.clock.now() >= moment

        await eventually(follows)
        body = {"name": "Time Traveller", "email": f"{uuid.uuid4().hex[:8]}@example.org", "channel": "event"}
        lead = as_json(await leads.client.post("/leads", json=body))
        seen = as_json(await leads.client.get(f"/leads/{lead['lead_id']}"))
        assert datetime.fromisoformat(seen["created_at"]) >= moment

    # A restarted service resumes from the time it kept, before reading the topic again.
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url, clock="simulated")
    app = create_app(settings)
    await app.state.runtime._load_clock()
    assert app.state.runtime.clock.now() >= moment
    await app.state.runtime.engine.dispose()

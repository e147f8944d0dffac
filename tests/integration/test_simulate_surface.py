"""What ``clientflow simulate`` relies on from the services: ``/health/ready`` says which clock
a service follows and its "now"; nurture shows an e-mail's text and signed links to a caller
with the API key (and only to them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from clientflow.cli import _advance
from services.leads.app import create_app as create_leads
from services.leads.settings import Settings as LeadsSettings
from services.nurture.app import create_app as create_nurture
from services.nurture.settings import Settings as NurtureSettings
from services.nurture.store import Message
from shared import events as ev
from shared.embedded import free_port
from tests.access.support import add_person
from tests.support import as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


async def test_ready_says_which_clock_and_its_now(kafka_bootstrap: str, database_url: str) -> None:
    settings = service_settings(LeadsSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_leads(settings), settings.port) as leads:
        clock = as_json(await leads.client.get("/health/ready"))["clock"]
        assert clock["kind"] == "system"
        assert abs((datetime.fromisoformat(clock["now"]) - datetime.now(UTC)).total_seconds()) < 60

    # The clock topic is shared by the session's broker: go past anything another test set.
    moment = datetime(2300 + uuid.uuid4().int % 600, 5, 1, 14, 0, tzinfo=UTC)
    settings = service_settings(LeadsSettings, bootstrap=kafka_bootstrap, database_url=database_url, clock="simulated")
    async with run_service(create_leads(settings), settings.port) as leads:
        await _advance(kafka_bootstrap, days=0, hours=0, to=moment.isoformat())

        async def caught_up() -> dict:
            clock = as_json(await leads.client.get("/health/ready"))["clock"]
            return clock if datetime.fromisoformat(clock["now"]) >= moment else {}

        clock = await eventually(caught_up)
        assert clock["kind"] == "simulated"
        # /health/live says the same without checking the database and broker (cheap to poll).
        live = as_json(await leads.client.get("/health/live"))["clock"]
        assert live["kind"] == "simulated" and datetime.fromisoformat(live["now"]) >= moment


async def test_messages_show_text_and_links_to_an_admin_only(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = service_settings(
        NurtureSettings,
        bootstrap=kafka_bootstrap,
        database_url=database_url,
        data_dir=tmp_path,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        send_interval_s=0.1,
        quiet_hours_start=0,
        quiet_hours_end=0,
    )
    lead_id = uuid.uuid4()
    captured = ev.LeadCaptured(
        name="Ada Lovelace",
        email=f"{uuid.uuid4().hex[:10]}@analytical.example",
        language="en",
        timezone="Europe/London",
        channel="website",
        consent_marketing=True,
        fit_score=72,
        segment="ideal",
    )
    async with run_service(create_nurture(settings), settings.port) as nurture:
        async with producer(kafka_bootstrap) as p:
            await publish(p, event("lead.captured", captured, lead_id=lead_id, producer_name="leads"))

        async def listed() -> list:
            return as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))

        (message,) = await eventually(listed)
        assert message["open_url"].startswith(f"{settings.public_url}/t/o/")
        assert f"{settings.public_url}/unsubscribe?token=" in message["body_text"]
        # The pixel is the real one: requesting it records the open.
        async with httpx.AsyncClient() as public:
            assert (await public.get(message["open_url"])).status_code == 200

        async def opened() -> bool:
            async with nurture.runtime.uow.sessions() as session:
                row = await session.get(Message, uuid.UUID(message["message_id"]))
                return row is not None and row.opened_at is not None

        assert await eventually(opened)

        _, sales = await add_person(nurture.runtime.uow.sessions, "sales")
        async with httpx.AsyncClient(base_url=nurture.url) as anonymous:
            assert (await anonymous.get(f"/leads/{lead_id}/messages")).status_code == 401
            assert (
                await anonymous.get(f"/leads/{lead_id}/messages", headers={"Authorization": "Bearer not-the-key"})
            ).status_code == 401
            (bare,) = as_json(
                await anonymous.get(f"/leads/{lead_id}/messages", headers={"Authorization": f"Bearer {sales}"})
            )
        for seen in (bare,):
            assert seen["message_id"] == message["message_id"]
            assert seen["body_text"] is None and seen["open_url"] is None

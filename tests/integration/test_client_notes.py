"""Notes on a client and a tier set by hand, on a real broker and database: tags from a fixed
list (an unknown one is a 422 naming ``tags[i]``), two ``mistreats_staff`` notes in 90 days make
a let-go candidate, a manual tier wins over the computed one until its day and then ends by
itself (``client.tier_changed`` both times, with the reason), notes go with the person on
erasure, and ``clientflow replay retention`` rebuilds the manual tier (from
``client.tier_set_manually``) and keeps the notes (copied: their text is never published)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from services.retention.app import create_app
from services.retention.replay import replay
from services.retention.settings import Settings
from services.retention.store import Client, ClientNote, ManualTierRow
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import create_engine
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


class ManualClock(SimulatedClock):
    """Moved by the test alone (never follows the shared clock topic)."""

    simulated = False


def client_events(lead_id: uuid.UUID) -> list[ev.Envelope]:
    now = datetime.now(UTC)
    return [
        event(
            "lead.captured",
            ev.LeadCaptured(name="Ada", email=f"{lead_id.hex[:8]}@example.com", channel="website", fit_score=70),
            lead_id=lead_id,
            producer_name="leads",
        ),
        event(
            "deposit.cleared",
            ev.DepositCleared(
                deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(900), currency="EUR", cleared_at=now
            ),
            lead_id=lead_id,
            producer_name="billing",
        ),
    ]


async def send(bootstrap: str, *envelopes: ev.Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def a_client(retention, kafka_bootstrap: str) -> uuid.UUID:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, *client_events(lead_id))

    async def known() -> bool:
        response = await retention.client.get(f"/clients/{lead_id}")
        return response.status_code == 200 and response.json()["became_client_at"] is not None

    await eventually(known)
    return lead_id


@pytest.fixture
def databases(database_factory) -> dict[str, str]:
    """The live store and the one the replay rebuilds (made outside the event loop)."""
    return {name: database_factory(name) for name in ("retention", "rebuilt")}


async def test_notes_let_go_and_a_manual_tier_that_ends(kafka_bootstrap: str, databases: dict[str, str]) -> None:
    clock = ManualClock()
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=databases["retention"])
    async with run_service(create_app(settings, clock=clock), settings.port) as retention:
        lead_id = await a_client(retention, kafka_bootstrap)
        notes_url = f"/clients/{lead_id}/notes"

        # Bad input: a 422 naming the field, and nothing kept.
        unknown = await retention.client.post(notes_url, json={"text": "x", "tags": ["slow_payer", "rude"]})
        assert unknown.status_code == 422
        assert any(e["loc"][-2:] == ["tags", 1] for e in unknown.json()["detail"]), unknown.text
        empty = await retention.client.post(notes_url, json={"text": "", "tags": []})
        assert empty.status_code == 422 and "text" in empty.text
        long = await retention.client.post(notes_url, json={"text": "x" * 5001})
        assert long.status_code == 422 and "text" in long.text
        assert (await retention.client.post(f"/clients/{uuid.uuid4()}/notes", json={"text": "hi"})).status_code == 404
        assert as_json(await retention.client.get(notes_url)) == []

        # One mistreats_staff note is not enough; two in 90 days make a let-go candidate.
        first = as_json(
            await retention.client.post(
                notes_url, json={"text": "Shouted at our designer.", "tags": ["mistreats_staff"]}
            )
        )
        assert first["tags"] == ["mistreats_staff"] and first["lead_id"] == str(lead_id)
        review = as_json(await retention.client.post("/reviews"))
        assert str(lead_id) not in [c["lead_id"] for c in review["let_go"]]
        as_json(
            await retention.client.post(
                notes_url, json={"text": "Insulted the account manager.", "tags": ["mistreats_staff", "scope_creep"]}
            )
        )
        listed = as_json(await retention.client.get(notes_url))
        assert [n["text"] for n in listed] == ["Insulted the account manager.", "Shouted at our designer."]
        review = as_json(await retention.client.post("/reviews"))
        let_go = {c["lead_id"]: c for c in review["let_go"]}
        assert let_go[str(lead_id)]["reasons"] == ["mistreats_staff noted 2 times in 90 days"]
        body = as_json(await retention.client.get(f"/clients/{lead_id}"))
        assert body["tier"] == "fire" and body["computed_tier"] == "fire" and body["manual_tier"] is None

        # A manual tier: bad input names its field.
        tier_url = f"/clients/{lead_id}/tier"
        today = clock.now().date()
        past = await retention.client.put(tier_url, json={"tier": "good", "reason": "x", "until": today.isoformat()})
        assert past.status_code == 422 and "until" in past.text
        no_reason = await retention.client.put(tier_url, json={"tier": "good", "until": "2099-01-01"})
        assert no_reason.status_code == 422 and "reason" in no_reason.text
        bad_tier = await retention.client.put(tier_url, json={"tier": "great", "reason": "x", "until": "2099-01-01"})
        assert bad_tier.status_code == 422 and "tier" in bad_tier.text
        assert (await retention.client.delete(tier_url)).status_code == 404

        until = today + timedelta(days=10)
        async with TopicReader(kafka_bootstrap, topics.RETENTION) as bus:
            set_ = as_json(
                await retention.client.put(
                    tier_url,
                    json={"tier": "good", "reason": "the founder vouched for them", "until": until.isoformat()},
                )
            )
            assert set_["tier"] == "good" and set_["computed_tier"] == "fire"
            assert set_["manual_tier"]["reason"] == "the founder vouched for them"
            changed = await published(bus, lead_id, lambda d: d["reasons"][0].startswith("set by hand"))
            assert changed["to_tier"] == "good" and changed["manual"] is True and changed["computed_tier"] == "fire"
            assert changed["reasons"] == ["set by hand: the founder vouched for them"]
            manual_event = (await bus.wait_for("client.tier_set_manually", lead_id=lead_id))[0].data
            assert manual_event == {
                "tier": "good",
                "reason": "the founder vouched for them",
                "until": until.isoformat(),
                "set_by": manual_event["set_by"],
            }
            # The review keeps the computed tier, shows the manual one, and lets nobody go by hand.
            review = as_json(await retention.client.post("/reviews"))
            assert str(lead_id) not in [c["lead_id"] for c in review["let_go"]]
            manual = {m["lead_id"]: m for m in review["manual"]}[str(lead_id)]
            assert manual["tier"] == "good" and manual["computed_tier"] == "fire"
            assert manual["reason"] == "the founder vouched for them"
            body = as_json(await retention.client.get(f"/clients/{lead_id}"))
            assert body["tier"] == "good" and body["computed_tier"] == "fire"
            assert body["manual_tier"]["until"] == until.isoformat()

            # Its day comes: the computed tier is in force again, published with the reason.
            clock.advance_to(clock.now() + timedelta(days=11))
            ended = await published(bus, lead_id, lambda d: d["reasons"][0].startswith("manual tier ended"))
            assert ended["to_tier"] == "fire" and ended["from_tier"] == "good"
            await bus.wait_for("client.tier_set_manually", lead_id=lead_id, count=2)
        body = as_json(await retention.client.get(f"/clients/{lead_id}"))
        assert body["tier"] == "fire" and body["manual_tier"] is None

        # Set again (replayed below), then the replay rebuilds the manual tier and keeps the notes.
        until = clock.now().date() + timedelta(days=30)
        as_json(
            await retention.client.put(tier_url, json={"tier": "tolerable", "reason": "trial", "until": str(until)})
        )
        async with TopicReader(kafka_bootstrap, topics.RETENTION) as bus:
            await bus.wait_for("client.tier_set_manually", lead_id=lead_id, count=3)
        rebuilt_url = databases["rebuilt"]
        report = await replay(settings, database_url=rebuilt_url)
        assert report.notes >= 2
        engine = create_engine(rebuilt_url)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(ManualTierRow).where(ManualTierRow.lead_id == lead_id))).one()
                assert (row.tier, row.reason, row.until) == ("tolerable", "trial", until)
                client = (await conn.execute(select(Client).where(Client.lead_id == lead_id))).one()
                assert client.tier == "tolerable" and client.computed_tier == "fire"
                texts = set(
                    (await conn.execute(select(ClientNote.text).where(ClientNote.lead_id == lead_id))).scalars()
                )
                assert texts == {"Insulted the account manager.", "Shouted at our designer."}
        finally:
            await engine.dispose()

        # Erasure: the notes go with the person, the manual tier keeps no reason.
        await send(
            kafka_bootstrap,
            event("lead.erased", ev.LeadErased(requested_at=datetime.now(UTC)), lead_id=lead_id, producer_name="leads"),
        )

        async def notes_gone() -> bool:
            return as_json(await retention.client.get(notes_url)) == []

        await eventually(notes_gone)
        erased = as_json(await retention.client.get(f"/clients/{lead_id}"))
        assert erased["manual_tier"]["reason"] == "(erased)" and erased["tier_reasons"] == ["set by hand: (erased)"]
        refused = await retention.client.post(notes_url, json={"text": "more"})
        assert refused.status_code == 409


async def published(bus: TopicReader, lead_id: uuid.UUID, wanted) -> dict:  # type: ignore[no-untyped-def]
    """The first ``client.tier_changed`` of the person whose payload ``wanted`` accepts."""
    for _ in range(200):
        found = [e.data for e in bus.events("client.tier_changed", lead_id) if wanted(e.data)]
        if found:
            return found[0]
        await bus._poll()
    raise AssertionError(f"no such client.tier_changed: {[e.data for e in bus.events('client.tier_changed', lead_id)]}")

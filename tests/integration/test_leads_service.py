"""Leads against a real broker and a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.leads.app import create_app
from services.leads.settings import Settings
from shared import events as ev
from shared import topics
from tests.support import (
    TopicReader,
    as_json,
    event,
    eventually,
    producer,
    publish,
    publish_raw,
    run_service,
    service_settings,
)

pytestmark = pytest.mark.integration

LEAD = {
    "name": "Ada Lovelace",
    "email": "ada@analytical.example",
    "company": "Analytical Engines",
    "job_title": "Founder",
    "industry": "saas",
    "employees": 40,
    "country": "GB",
    "channel": "website",
    "budget": "8000",
    "currency": "GBP",
    "brief": "Grow organic traffic for our SaaS",
    "timeline": "next quarter",
    "needs": ["seo"],
    "consent_marketing": True,
}


@pytest.fixture
async def leads(kafka_bootstrap: str, database_url: str):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


def unique(lead: dict) -> dict:
    return lead | {"email": f"{uuid.uuid4().hex[:10]}@{lead['email'].split('@')[1]}"}


async def test_capture_publishes_lead_captured_and_dedupes(leads, kafka_bootstrap: str) -> None:
    body = unique(LEAD)
    first = await leads.client.post("/leads", json=body)
    assert first.status_code == 201, first.text
    lead_id = first.json()["lead_id"]
    assert first.json()["fit_score"] >= 60

    again = await leads.client.post("/leads", json=body | {"channel": "event"})
    assert again.status_code == 200
    assert again.json()["lead_id"] == lead_id and again.json()["duplicate"] is True

    async with TopicReader(kafka_bootstrap, topics.LEADS) as reader:
        first_touch, second_touch = await reader.wait_for("lead.captured", lead_id=lead_id, count=2)
    payload = ev.LeadCaptured.model_validate(first_touch.data)
    assert payload.email == body["email"] and payload.channel == "website" and first_touch.producer == "leads"
    assert payload.duplicate is False
    # the second touch is told too (nurture merges consent, retention ignores it), on the same key
    again_payload = ev.LeadCaptured.model_validate(second_touch.data)
    assert again_payload.duplicate is True and again_payload.channel == "event"


async def test_deal_won_needs_signature_and_carries_deposit_share(leads, kafka_bootstrap: str) -> None:
    lead_id = as_json(await leads.client.post("/leads", json=unique(LEAD) | {"brief": None, "budget": None}))["lead_id"]
    deal = as_json(
        await leads.client.post(
            f"/leads/{lead_id}/deals",
            json={
                "title": "Site",
                "kind": "project",
                "currency": "GBP",
                "lines": [{"description": "Design", "hours": "20", "amount": "3000"}],
            },
        )
    )
    unsigned = await leads.client.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": "  "})
    assert unsigned.status_code == 422 and "signed_by" in unsigned.text
    won = as_json(await leads.client.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": "Ada"}))
    # two red flags (no brief, no budget) ask more than the 30 % base
    assert Decimal(won["deposit_share"]) == Decimal("0.50")
    async with TopicReader(kafka_bootstrap, topics.DEALS) as reader:
        (event_won,) = await reader.wait_for("deal.won", lead_id=lead_id)
    assert ev.DealWon.model_validate(event_won.data).deposit_share == Decimal("0.50")


async def test_bad_input_is_a_clear_4xx(leads) -> None:
    bad = await leads.client.post("/leads", json=LEAD | {"email": "not-an-email", "channel": "pigeon", "budget": "-5"})
    assert bad.status_code == 422
    text = bad.text
    assert "invalid email" in text and "unknown channel" in text and "negative" in text
    missing = await leads.client.post(
        f"/leads/{uuid.uuid4()}/deals", json={"title": "x", "kind": "retainer", "currency": "EUR", "monthly_fee": "10"}
    )
    assert missing.status_code == 404
    noauth = await leads.client.post("/leads", json=unique(LEAD), headers={"Authorization": "Bearer wrong"})
    assert noauth.status_code == 401


async def test_idempotency_key_replays_and_refuses_other_body(leads) -> None:
    body = unique(LEAD)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await leads.client.post("/leads", json=body, headers=key)
    again = await leads.client.post("/leads", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    other = await leads.client.post("/leads", json=unique(LEAD), headers=key)
    assert other.status_code == 409 and "different request" in other.text


async def test_events_move_the_stage_once_even_when_redelivered(leads, kafka_bootstrap: str) -> None:
    lead_id = uuid.UUID(as_json(await leads.client.post("/leads", json=unique(LEAD)))["lead_id"])
    cleared = event(
        "deposit.cleared",
        ev.DepositCleared(
            deal_id=uuid.uuid4(),
            invoice_id=uuid.uuid4(),
            amount=Decimal("600"),
            currency="GBP",
            cleared_at=datetime.now(UTC),
        ),
        lead_id=lead_id,
    )
    async with producer(kafka_bootstrap) as p:
        await publish(p, cleared)
        await publish(p, cleared)  # redelivery: same event_id

    async def in_action() -> bool:
        return (await leads.client.get(f"/leads/{lead_id}")).json()["stage"] == "action"

    await eventually(in_action)
    async with producer(kafka_bootstrap) as p:
        await publish(p, cleared)
        marker = event(
            "cancellation.completed",
            ev.CancellationCompleted(cancellation_id=uuid.uuid4(), reason="budget", effective_at=datetime.now(UTC)),
            lead_id=lead_id,
        )
        await publish(p, marker)

    async def churned() -> bool:
        return (await leads.client.get(f"/leads/{lead_id}")).json()["stage"] == "churned"

    await eventually(churned)
    timeline = (await leads.client.get(f"/leads/{lead_id}")).json()["timeline"]
    assert [t["cause"] for t in timeline] == ["lead.captured", "deposit.cleared", "cancellation.completed"]


async def test_malformed_message_is_dead_lettered_and_next_one_applies(leads, kafka_bootstrap: str) -> None:
    lead_id = uuid.UUID(as_json(await leads.client.post("/leads", json=unique(LEAD)))["lead_id"])
    async with producer(kafka_bootstrap) as p:
        await publish_raw(p, topics.PAYMENTS, b"{not json", key=str(lead_id).encode())
        bad_payload = event(
            "deposit.cleared",
            ev.DepositCleared(
                deal_id=uuid.uuid4(),
                invoice_id=uuid.uuid4(),
                amount=Decimal(1),
                currency="EUR",
                cleared_at=datetime.now(UTC),
            ),
            lead_id=lead_id,
        )
        bad_payload.data["amount"] = "lots"
        await publish(p, bad_payload)
        unknown = bad_payload.model_copy(update={"type": "payment.teleported", "event_id": uuid.uuid4()})
        await publish_raw(p, topics.PAYMENTS, unknown.model_dump_json().encode(), key=str(lead_id).encode())
        good = event(
            "deposit.cleared",
            ev.DepositCleared(
                deal_id=uuid.uuid4(),
                invoice_id=uuid.uuid4(),
                amount=Decimal(1),
                currency="EUR",
                cleared_at=datetime.now(UTC),
            ),
            lead_id=lead_id,
        )
        await publish(p, good)

    async def in_action() -> bool:
        return (await leads.client.get(f"/leads/{lead_id}")).json()["stage"] == "action"

    await eventually(in_action)
    async with TopicReader(kafka_bootstrap, topics.dlq(topics.PAYMENTS)) as reader:
        records = await reader.records(topics.dlq(topics.PAYMENTS), count=2)
    mine = [r for r in records if r.key == str(lead_id).encode()]
    reasons = sorted(dict(r.headers)["x-dlq-reason"].decode() for r in mine)
    assert reasons == ["invalid_envelope", "invalid_payload"]
    assert all(dict(r.headers)["x-origin-topic"] == b"payments" for r in mine)
    metrics = (await leads.client.get("/metrics")).text
    assert 'clientflow_dead_letters_total{reason="invalid_envelope",service="leads",topic="payments"}' in metrics
    assert 'outcome="unknown_type"' in metrics

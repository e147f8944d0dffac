"""Retention against a real broker and a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from services.retention.app import create_app
from services.retention.settings import Settings
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import OutboxRow
from shared.events import Envelope
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def retention(kafka_bootstrap: str, database_url: str):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


def now() -> datetime:
    return datetime.now(UTC)


def captured(lead_id: uuid.UUID, channel: str = "website") -> Envelope:
    payload = ev.LeadCaptured(name="Ada", email=f"{lead_id.hex[:8]}@example.com", channel=channel, fit_score=70)
    return event("lead.captured", payload, lead_id=lead_id, producer_name="leads")


def won(lead_id: uuid.UUID, total: str, currency: str) -> Envelope:
    payload = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Retainer",
        kind="retainer",
        currency=currency,
        total=Decimal(total),
        signed_by="Ada",
        signed_at=now(),
        deposit_share=Decimal("0.3"),
    )
    return event("deal.won", payload, lead_id=lead_id, producer_name="leads")


def cleared(lead_id: uuid.UUID, amount: str, currency: str) -> Envelope:
    payload = ev.DepositCleared(
        deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(amount), currency=currency, cleared_at=now()
    )
    return event("deposit.cleared", payload, lead_id=lead_id, producer_name="billing")


def paid(lead_id: uuid.UUID, amount: str, currency: str, days_late: int = 0) -> Envelope:
    payload = ev.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        invoice_id=uuid.uuid4(),
        amount=Decimal(amount),
        currency=currency,
        method="card",
        paid_at=now(),
        days_late=days_late,
        invoice_paid=True,
    )
    return event("payment.succeeded", payload, lead_id=lead_id, producer_name="billing")


def started(lead_id: uuid.UUID, subscription_id: uuid.UUID, fee: str, currency: str) -> Envelope:
    payload = ev.SubscriptionStarted(
        subscription_id=subscription_id,
        deal_id=uuid.uuid4(),
        monthly_fee=Decimal(fee),
        currency=currency,
        started_at=now(),
    )
    return event("subscription.started", payload, lead_id=lead_id, producer_name="billing")


async def send(bootstrap: str, *envelopes: Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def client_when(retention, lead_id: uuid.UUID, **expected: object) -> dict:
    """Poll GET /clients/{lead_id} until the given fields have the given values."""

    async def check() -> dict:
        response = await retention.client.get(f"/clients/{lead_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        for name, value in expected.items():
            assert body[name] == value, f"{name}: {body[name]!r} != {value!r}"
        return body

    return await eventually(check)


async def subscribed_client(retention, bootstrap: str, *, fee: str, currency: str) -> tuple[uuid.UUID, uuid.UUID]:
    lead_id, subscription_id = uuid.uuid4(), uuid.uuid4()
    await send(bootstrap, cleared(lead_id, "300", currency), started(lead_id, subscription_id, fee, currency))
    await client_when(retention, lead_id, subscription_status="active", tier="good")
    return lead_id, subscription_id


async def outbox_count(retention, event_type: str, lead_id: uuid.UUID) -> int:
    async with retention.runtime.uow.sessions() as session:
        return await session.scalar(
            select(func.count()).where(OutboxRow.event_type == event_type, OutboxRow.key == str(lead_id).encode())
        )


async def test_events_build_the_client_with_revenue_mrr_and_health(retention, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    subscription_id = uuid.uuid4()
    await send(
        kafka_bootstrap,
        captured(lead_id, channel="referral"),
        won(lead_id, "12000", "GBP"),
        cleared(lead_id, "600", "GBP"),
        paid(lead_id, "600", "GBP"),
        started(lead_id, subscription_id, "1000", "GBP"),
    )
    body = await client_when(retention, lead_id, subscription_status="active", deals_won=1, channel="referral")
    assert body["revenue"] == [{"amount": "600", "currency": "GBP"}]
    assert body["mrr"] == {"amount": "1000", "currency": "GBP"}
    assert body["tier"] == "good" and body["became_client_at"] is not None
    # new client, one payment on time: 30*100 + 15*100 + 20*100 + 10*50 + 15*0 + 10*100 = 80
    assert (body["health_score"], body["band"]) == (80, "green")
    punctuality = body["factors"]["punctuality"]
    assert (punctuality["value"], punctuality["weight"], punctuality["evidence"]) == (
        100,
        30,
        {"on_time": 1, "late": 0},
    )
    assert [e["type"] for e in punctuality["events"]] == ["payment.succeeded"]
    assert set(body["factors"]) == {"punctuality", "failures", "complaints", "engagement", "tenure", "scope"}

    listed = as_json(await retention.client.get("/clients", params={"tier": "good", "limit": 500}))
    assert str(lead_id) in [item["lead_id"] for item in listed["items"]]
    assert listed["limit"] == 500 and listed["total"] >= 1
    fire = as_json(await retention.client.get("/clients", params={"tier": "fire"}))
    assert str(lead_id) not in [item["lead_id"] for item in fire["items"]]

    async with TopicReader(kafka_bootstrap, topics.RETENTION) as reader:
        (health,) = await reader.wait_for("client.health_changed", lead_id=lead_id)
        (tier,) = await reader.wait_for("client.tier_changed", lead_id=lead_id)
    assert ev.ClientHealthChanged.model_validate(health.data).band == "green"
    assert ev.ClientTierChanged.model_validate(tier.data).to_tier == "good"
    assert health.producer == "retention"

    metrics = (await retention.client.get("/metrics")).text
    assert 'clientflow_retention_clients_by_tier{tier="good"}' in metrics
    assert 'clientflow_retention_mrr{currency="GBP"}' in metrics


async def test_unknown_client_is_404(retention) -> None:
    missing = await retention.client.get(f"/clients/{uuid.uuid4()}")
    assert missing.status_code == 404 and "no client" in missing.text


async def test_redelivered_payment_counts_once(retention, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    payment = paid(lead_id, "250", "EUR")
    # the same event_id twice, then a marker on the same partition: once the marker shows,
    # the duplicate has been read too
    await send(
        kafka_bootstrap, cleared(lead_id, "250", "EUR"), payment, payment, paid(lead_id, "50", "EUR", days_late=3)
    )

    body = await client_when(retention, lead_id, revenue=[{"amount": "300", "currency": "EUR"}])
    assert body["factors"]["punctuality"]["evidence"] == {"on_time": 1, "late": 1}


async def test_cancellation_offers_a_pause_and_accepting_saves_the_client(retention, kafka_bootstrap: str) -> None:
    lead_id, _ = await subscribed_client(retention, kafka_bootstrap, fee="1000", currency="EUR")
    answer = await retention.client.post(
        f"/clients/{lead_id}/cancellation", json={"reason": "budget_cut", "comment": "quiet season"}
    )
    assert answer.status_code == 201, answer.text
    requested = answer.json()
    assert requested["status"] == "requested"
    assert requested["offer"] | {"description": ""} == {
        "kind": "pause",
        "fee": "200.00",
        "discount_percent": None,
        "months": 2,
        "currency": "EUR",
        "description": "",
        "included_hours": None,
    }
    cancellation_id = requested["cancellation_id"]

    again = await retention.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "other"})
    assert again.status_code == 409 and "still open" in again.text

    accepted = as_json(await retention.client.post(f"/cancellations/{cancellation_id}/accept"))
    assert accepted["status"] == "saved" and accepted["decided_at"] is not None
    repeat = as_json(await retention.client.post(f"/cancellations/{cancellation_id}/accept"))
    assert repeat == accepted
    confirm = await retention.client.post(f"/cancellations/{cancellation_id}/confirm")
    assert confirm.status_code == 409 and "saved" in confirm.text

    async with TopicReader(kafka_bootstrap, topics.CANCELLATIONS) as reader:
        (req,) = await reader.wait_for("cancellation.requested", lead_id=lead_id)
        (saved,) = await reader.wait_for("cancellation.saved", lead_id=lead_id)
    request_payload = ev.CancellationRequested.model_validate(req.data)
    assert (request_payload.reason, request_payload.offer.kind, request_payload.offer.fee) == (
        "budget_cut",
        "pause",
        Decimal("200.00"),
    )
    saved_payload = ev.CancellationSaved.model_validate(saved.data)
    assert str(saved_payload.cancellation_id) == cancellation_id and saved_payload.offer.months == 2
    assert await outbox_count(retention, "cancellation.saved", lead_id) == 1

    missing = await retention.client.post(f"/cancellations/{uuid.uuid4()}/accept")
    assert missing.status_code == 404

    # erasure: the free text the client wrote goes, the figures stay
    erased = ev.LeadErased(requested_at=now())
    await send(kafka_bootstrap, event("lead.erased", erased, lead_id=lead_id, producer_name="leads"))
    body = await client_when(retention, lead_id, erased=True)
    assert body["mrr"] == {"amount": "1000", "currency": "EUR"}
    kept = as_json(await retention.client.get(f"/cancellations/{cancellation_id}"))
    assert kept["comment"] is None and kept["status"] == "saved"


async def test_confirming_completes_the_cancellation_once(retention, kafka_bootstrap: str) -> None:
    lead_id, _ = await subscribed_client(retention, kafka_bootstrap, fee="500", currency="USD")
    requested = as_json(await retention.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "price"}))
    assert requested["offer"]["kind"] == "discount" and requested["offer"]["fee"] == "400.00"
    cancellation_id = requested["cancellation_id"]

    completed = as_json(await retention.client.post(f"/cancellations/{cancellation_id}/confirm"))
    assert completed["status"] == "completed"
    repeat = as_json(await retention.client.post(f"/cancellations/{cancellation_id}/confirm"))
    assert repeat == completed
    late_accept = await retention.client.post(f"/cancellations/{cancellation_id}/accept")
    assert late_accept.status_code == 409 and "completed" in late_accept.text

    async with TopicReader(kafka_bootstrap, topics.CANCELLATIONS) as reader:
        (done,) = await reader.wait_for("cancellation.completed", lead_id=lead_id)
    payload = ev.CancellationCompleted.model_validate(done.data)
    assert str(payload.cancellation_id) == cancellation_id and payload.reason == "price"
    assert await outbox_count(retention, "cancellation.completed", lead_id) == 1
    metrics = (await retention.client.get("/metrics")).text
    assert 'clientflow_retention_cancellations_total{outcome="completed",reason="price"} 1.0' in metrics


async def test_cancellation_needs_a_running_subscription_a_known_client_and_the_key(
    retention, kafka_bootstrap: str
) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, cleared(lead_id, "300", "EUR"))
    await client_when(retention, lead_id, tier="good")

    refused = await retention.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "budget_cut"})
    assert refused.status_code == 409
    assert "no active or paused subscription" in refused.json()["detail"]
    unknown = await retention.client.post(f"/clients/{uuid.uuid4()}/cancellation", json={"reason": "other"})
    assert unknown.status_code == 404
    bad_reason = await retention.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "bored"})
    assert bad_reason.status_code == 422
    no_key = await retention.client.post(
        f"/clients/{lead_id}/cancellation", json={"reason": "other"}, headers={"Authorization": "Bearer wrong"}
    )
    assert no_key.status_code == 401


async def test_paused_subscription_leaves_mrr_and_cancelled_one_counts_as_churn(
    retention, kafka_bootstrap: str
) -> None:
    # NOK is used by this test only, so other tests' clients never change these figures.
    lead_id, subscription_id = await subscribed_client(retention, kafka_bootstrap, fee="1500", currency="NOK")

    async def nok_mrr() -> list:
        body = as_json(await retention.client.get("/economics"))
        return [m for m in body["mrr"] if m["currency"] == "NOK"]

    assert await eventually(nok_mrr) == [{"amount": "1500", "currency": "NOK"}]
    await eventually(lambda: _metric(retention, 'clientflow_retention_mrr{currency="NOK"} 1500.0'))

    pause = ev.SubscriptionPaused(subscription_id=subscription_id, paused_fee=Decimal("300"), currency="NOK")
    await send(kafka_bootstrap, event("subscription.paused", pause, lead_id=lead_id, producer_name="billing"))
    body = await client_when(retention, lead_id, subscription_status="paused")
    assert body["mrr"] == {"amount": "0", "currency": "NOK"}
    economics = as_json(await retention.client.get("/economics"))
    assert [m for m in economics["mrr"] if m["currency"] == "NOK"] == []
    assert economics["paused_subscriptions"] >= 1
    await eventually(lambda: _metric(retention, 'clientflow_retention_mrr{currency="NOK"} 0.0'))

    end = ev.SubscriptionCancelled(subscription_id=subscription_id, effective_at=now())
    await send(kafka_bootstrap, event("subscription.cancelled", end, lead_id=lead_id, producer_name="billing"))
    await client_when(retention, lead_id, subscription_status="cancelled")
    # a period that starts before the subscription: at its start there was no client yet
    body = as_json(await retention.client.get("/economics", params={"currency": "NOK"}))
    assert body["mrr_movements"]["churn"] == "0"  # it was paused: its MRR had already left
    assert body["mrr_movements"]["pause"] == "1500"


async def test_economics_refuses_an_unknown_currency(retention) -> None:
    """Found by the HTTP fuzzer: an unknown code failed only when the answer was built (500)."""
    response = await retention.client.get("/economics", params={"currency": "000"})
    assert response.status_code == 422
    assert "unknown currency '000'" in response.json()["detail"]
    assert (await retention.client.get("/economics", params={"currency": "nok"})).status_code == 200


async def _metric(retention, line: str) -> bool:
    return line in (await retention.client.get("/metrics")).text


class ManualClock(SimulatedClock):
    """Moved by the test alone. Not marked ``simulated``, so the service never follows the
    shared clock topic, where other tests publish their own ticks."""

    simulated = False


async def test_scheduled_review_rescores_as_tenure_grows(kafka_bootstrap: str, database_url: str) -> None:
    clock = ManualClock()
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings, clock=clock), settings.port) as retention:
        lead_id = uuid.uuid4()
        complaint = ev.FeedbackReceived(survey="nps", score=2, complaint=True)
        await send(kafka_bootstrap, cleared(lead_id, "300", "EUR"), paid(lead_id, "300", "EUR", days_late=12))
        # punctuality 0, failures 100, complaints 100, engagement 50, tenure 0, scope 100:
        # (0 + 1500 + 2000 + 500 + 0 + 1000) / 100 = 50
        await client_when(retention, lead_id, health_score=50, band="red")
        # feedback travels on another topic: sent only now, so the order of bands is known
        await send(kafka_bootstrap, event("feedback.received", complaint, lead_id=lead_id, producer_name="nurture"))
        # complaints 75 now, engagement 30 - 20 (survey score 2) = 10:
        # (0 + 1500 + 1500 + 100 + 0 + 1000) / 100 = 41
        body = await client_when(retention, lead_id, health_score=41, band="red")
        assert body["factors"]["complaints"]["evidence"] == {"complaints": 1, "feedback": 1}

        clock.advance_to(now() + timedelta(days=400))  # scheduled jobs run when the clock jumps
        # tenure now full: 41 + 15 = 56
        await client_when(retention, lead_id, health_score=56, band="yellow")
        async with TopicReader(kafka_bootstrap, topics.RETENTION) as reader:
            changes = await reader.wait_for("client.health_changed", lead_id=lead_id, count=3)
        bands = [ev.ClientHealthChanged.model_validate(c.data) for c in changes]
        assert [(b.band, b.previous_score) for b in bands] == [("green", None), ("red", 80), ("yellow", 41)]

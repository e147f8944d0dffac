"""Stripe's own webhook events (``POST /payments/stripe``) against a real broker and database:
payloads shaped like Stripe's published events, signed with the stripe library's own helper,
on a test-owned simulated clock."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from pydantic import SecretStr

from services.billing.app import create_app
from services.billing.settings import Settings
from shared import topics
from shared.clock import SimulatedClock
from tests.integration.test_billing_service import deal_won, invoices_of, send
from tests.support import RunningService, TopicReader, as_json, run_service, service_settings

pytestmark = pytest.mark.integration

SECRET = "whsec_test_" + uuid.uuid4().hex
START = datetime(2031, 3, 3, 10, tzinfo=UTC)


@dataclass
class Stripe:
    """The service under test, its clock, and a reader of the payments topic."""

    svc: RunningService
    clock: SimulatedClock
    reader: TopicReader

    async def post(self, event: dict[str, Any], *, at: datetime | None = None, secret: str = SECRET):
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret, timestamp=int((at or self.clock.now()).timestamp())
        )
        return await self.svc.client.post(
            "/payments/stripe",
            content=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    async def deposit(self, kafka_bootstrap: str) -> tuple[uuid.UUID, dict]:
        """A won project (3000 EUR, 30 % deposit): its open deposit invoice of 900.00 EUR."""
        lead_id = uuid.uuid4()
        await send(kafka_bootstrap, deal_won(lead_id, total="3000", share="0.30"))
        (invoice,) = await invoices_of(self.svc, lead_id)
        assert (invoice["amount"], invoice["status"]) == ("900.00", "open")
        return lead_id, invoice

    async def metric(self, outcome: str) -> float:
        text = (await self.svc.client.get("/metrics")).text
        line = f'clientflow_billing_webhooks_total{{outcome="{outcome}"}} '
        return next((float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0.0)


@pytest.fixture
async def billing(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Stripe]:
    clock = SimulatedClock(START)
    settings = service_settings(
        Settings, bootstrap=kafka_bootstrap, database_url=database_url, stripe_webhook_secret=SecretStr(SECRET)
    )
    app = create_app(settings, clock=clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        yield Stripe(svc, clock, reader)


def stripe_event(kind: str, obj: dict[str, Any], **data: Any) -> dict[str, Any]:
    """An event as Stripe publishes it (API version 2025-xx): ``data.object`` is the object."""
    return {
        "id": "evt_" + uuid.uuid4().hex[:24],
        "object": "event",
        "api_version": "2025-06-30.basil",
        "created": int(START.timestamp()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_" + uuid.uuid4().hex[:14], "idempotency_key": None},
        "type": kind,
        "data": {"object": obj, **data},
    }


def payment_intent(
    invoice_id: str | None, *, amount: int, received: int, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "pi_" + uuid.uuid4().hex[:24],
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": received,
        "capture_method": "automatic",
        "client_secret": "pi_secret_x",
        "created": int(START.timestamp()),
        "currency": "eur",
        "customer": "cus_" + uuid.uuid4().hex[:14],
        "last_payment_error": error,
        "latest_charge": "ch_" + uuid.uuid4().hex[:24],
        "livemode": False,
        "metadata": {"invoice_id": invoice_id} if invoice_id else {},
        "payment_method_types": ["card"],
        "status": "succeeded" if error is None else "requires_payment_method",
    }


def charge(intent_id: str, *, amount: int, refunded: int) -> dict[str, Any]:
    """A charge as ``charge.refunded`` carries it: no metadata of its own, only its intent."""
    return {
        "id": "ch_" + uuid.uuid4().hex[:24],
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "captured": True,
        "currency": "eur",
        "metadata": {},
        "paid": True,
        "payment_intent": intent_id,
        "refunded": refunded == amount,
        "status": "succeeded",
    }


async def invoice(billing: Stripe, invoice_id: str) -> dict:
    return as_json(await billing.svc.client.get(f"/invoices/{invoice_id}"))


async def test_a_succeeded_intent_pays_the_invoice_once_and_a_refund_issues_a_credit_note(
    billing: Stripe, kafka_bootstrap: str
) -> None:
    lead_id, open_invoice = await billing.deposit(kafka_bootstrap)
    intent = payment_intent(open_invoice["invoice_id"], amount=90000, received=90000)
    succeeded = stripe_event("payment_intent.succeeded", intent)
    answer = as_json(await billing.post(succeeded))
    assert (answer["status"], answer["invoice_status"]) == ("applied", "paid")
    (paid,) = await billing.reader.wait_for("payment.succeeded", lead_id=lead_id)
    assert (paid.data["amount"], paid.data["currency"], paid.data["reference"]) == ("900.00", "EUR", intent["id"])
    assert (await invoice(billing, open_invoice["invoice_id"]))["status"] == "paid"

    # The same Stripe event again (Stripe retries until it sees a 2xx) changes nothing.
    again = await billing.post(succeeded)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    read = await invoice(billing, open_invoice["invoice_id"])
    assert (read["amount_paid"], len(read["payments"])) == ("900.00", 1)

    # A partial refund, then the rest: each credits only its own part (previous_attributes).
    first = stripe_event(
        "charge.refunded",
        charge(intent["id"], amount=90000, refunded=10000),
        previous_attributes={"amount_refunded": 0},
    )
    note = as_json(await billing.post(first))
    assert note["status"] == "applied" and note["number"].startswith("CN-")
    rest = stripe_event(
        "charge.refunded",
        charge(intent["id"], amount=90000, refunded=90000),
        previous_attributes={"amount_refunded": 10000},
    )
    assert as_json(await billing.post(rest))["status"] == "applied"
    assert (await billing.post(rest)).json()["status"] == "duplicate"
    notes = await billing.reader.wait_for("credit_note.issued", lead_id=lead_id, count=2)
    assert sorted((n.data["amount"], n.data["refunded"]) for n in notes) == [
        ("100.00", "100.00"),
        ("800.00", "800.00"),
    ]
    read = await invoice(billing, open_invoice["invoice_id"])
    assert read["amount_credited"] == "900.00"
    assert len(billing.reader.events("payment.succeeded", lead_id=lead_id)) == 1

    # A dispute on the paid invoice (traced through its intent) is recorded, not a payment.
    dispute = {
        "id": "dp_" + uuid.uuid4().hex[:24],
        "object": "dispute",
        "amount": 90000,
        "charge": "ch_x",
        "currency": "eur",
        "metadata": {},
        "payment_intent": intent["id"],
        "reason": "fraudulent",
        "status": "needs_response",
    }
    recorded = as_json(await billing.post(stripe_event("charge.dispute.created", dispute)))
    assert (recorded["status"], recorded["invoice_id"], recorded["reason"]) == (
        "recorded",
        open_invoice["invoice_id"],
        "fraudulent",
    )


async def test_a_failed_intent_goes_through_dunning_like_the_project_webhook(
    billing: Stripe, kafka_bootstrap: str
) -> None:
    lead_id, open_invoice = await billing.deposit(kafka_bootstrap)
    error = {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
        "type": "card_error",
    }
    failed = stripe_event(
        "payment_intent.payment_failed",
        payment_intent(open_invoice["invoice_id"], amount=90000, received=0, error=error),
    )
    answer = as_json(await billing.post(failed))
    assert answer["status"] == "applied"
    (declined,) = await billing.reader.wait_for("payment.failed", lead_id=lead_id)
    assert (declined.data["amount"], declined.data["decline_code"], declined.data["hard_decline"]) == (
        "900.00",
        "insufficient_funds",
        False,
    )
    assert declined.data["attempt"] == 1 and declined.data["next_retry_at"] is not None  # a soft decline is retried
    assert (await billing.post(failed)).json()["status"] == "duplicate"

    # Without a decline code, Stripe's error code is the reason: a stolen card is a hard decline.
    stolen = {"code": "stolen_card", "decline_code": None, "message": "Your card was declined.", "type": "card_error"}
    hard = stripe_event(
        "payment_intent.payment_failed",
        payment_intent(open_invoice["invoice_id"], amount=90000, received=0, error=stolen),
    )
    assert as_json(await billing.post(hard))["status"] == "applied"
    declines = await billing.reader.wait_for("payment.failed", lead_id=lead_id, count=2)
    assert [(d.data["decline_code"], d.data["hard_decline"], d.data["attempt"]) for d in declines] == [
        ("insufficient_funds", False, 1),
        ("stolen_card", True, 2),
    ]
    assert (await invoice(billing, open_invoice["invoice_id"]))["status"] == "open"
    # A dispute on an invoice still open is a failed payment with decline code "dispute".
    dispute = {
        "id": "dp_" + uuid.uuid4().hex[:24],
        "object": "dispute",
        "amount": 90000,
        "charge": "ch_x",
        "currency": "eur",
        "metadata": {"invoice_id": open_invoice["invoice_id"]},
        "payment_intent": None,
        "reason": "product_not_received",
        "status": "needs_response",
    }
    assert as_json(await billing.post(stripe_event("charge.dispute.created", dispute)))["status"] == "applied"
    declines = await billing.reader.wait_for("payment.failed", lead_id=lead_id, count=3)
    assert (declines[-1].data["decline_code"], declines[-1].data["attempt"]) == ("dispute", 3)


async def test_bad_signatures_are_refused_and_other_events_ignored(billing: Stripe, kafka_bootstrap: str) -> None:
    lead_id, open_invoice = await billing.deposit(kafka_bootstrap)
    succeeded = stripe_event(
        "payment_intent.succeeded", payment_intent(open_invoice["invoice_id"], amount=90000, received=90000)
    )
    refused_before = await billing.metric("bad_signature")
    forged = await billing.post(succeeded, secret="whsec_not_ours")
    assert forged.status_code == 400 and "Stripe signature" in forged.json()["detail"]
    unsigned = await billing.svc.client.post("/payments/stripe", json=succeeded)
    assert unsigned.status_code == 400 and "Stripe-Signature" in unsigned.json()["detail"]
    old = await billing.post(succeeded, at=billing.clock.now() - timedelta(minutes=10))
    assert old.status_code == 400 and "tolerance" in old.json()["detail"]
    assert await billing.metric("bad_signature") == refused_before + 3
    assert (await invoice(billing, open_invoice["invoice_id"]))["status"] == "open"

    ignored_before = await billing.metric("ignored")
    unknown = stripe_event("customer.created", {"id": "cus_1", "object": "customer", "metadata": {}})
    assert as_json(await billing.post(unknown))["status"] == "ignored"
    no_invoice = as_json(
        await billing.post(stripe_event("payment_intent.succeeded", payment_intent(None, amount=500, received=500)))
    )
    assert no_invoice["status"] == "ignored" and "metadata.invoice_id" in no_invoice["reason"]
    expiring = stripe_event(
        "customer.source.expiring", {"id": "card_1", "object": "card", "exp_month": 4, "exp_year": 2031}
    )
    assert as_json(await billing.post(expiring))["status"] == "ignored"
    assert await billing.metric("ignored") == ignored_before + 3

    # Nothing reached the invoice; the real payment still applies afterwards.
    assert as_json(await billing.post(succeeded))["invoice_status"] == "paid"
    assert len(await billing.reader.wait_for("payment.succeeded", lead_id=lead_id)) == 1


async def test_without_a_secret_the_route_answers_404(kafka_bootstrap: str, database_url: str) -> None:
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        answer = await svc.client.post("/payments/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert answer.status_code == 404 and "BILLING_STRIPE_WEBHOOK_SECRET" in answer.json()["detail"]

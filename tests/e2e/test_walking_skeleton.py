"""The walking skeleton through all four services, as separate processes on the embedded
broker: every downstream effect is checked through the services' HTTP APIs and through the
events on the topics, read with a plain aiokafka consumer."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from shared import topics
from tests.support import TopicReader, as_json, eventually

pytestmark = pytest.mark.e2e


async def test_lead_to_client_to_churn(system) -> None:
    email = f"grace-{uuid.uuid4().hex[:8]}@hopper.example"
    async with (
        system.client("leads") as leads,
        system.client("nurture") as nurture,
        system.client("billing") as billing,
        system.client("retention") as retention,
        TopicReader(system.bootstrap, *topics.BUSINESS_TOPICS, master=system.master) as bus,
    ):
        # 1. capture -> lead.captured -> nurture enrolls and sends a first email -> email.sent
        created = await leads.post(
            "/leads",
            json={
                "name": "Grace Hopper",
                "email": email,
                "company": "Hopper Compilers",
                "job_title": "CEO",
                "industry": "software",
                "employees": 25,
                "country": "US",
                "channel": "referral",
                "budget": "12000",
                "currency": "USD",
                "brief": "Monthly content and SEO for our developer tools",
                "timeline": "next month",
                "needs": ["seo", "content"],
                "consent_marketing": True,
                "legal_basis": "consent",
            },
        )
        assert created.status_code == 201, created.text
        lead_id = created.json()["lead_id"]
        await bus.wait_for("lead.captured", lead_id=lead_id)
        (sent,) = await bus.wait_for("email.sent", lead_id=lead_id, timeout=30)
        assert sent.producer == "nurture" and sent.data["sequence"] == "welcome"

        async def first_email() -> list:
            return as_json(await nurture.get(f"/leads/{lead_id}/messages"))

        messages = await eventually(first_email)
        assert messages[0]["sequence"] == "welcome"

        # 2. an estimate, signed -> deal.won -> billing opens a deposit invoice; work may not start
        deal = as_json(
            await leads.post(
                f"/leads/{lead_id}/deals",
                json={
                    "title": "Content retainer",
                    "kind": "retainer",
                    "currency": "USD",
                    "monthly_fee": "3000",
                    "included_hours": "10",
                    "hourly_rate": "150",
                },
            )
        )
        deal_id = deal["deal_id"]
        won = as_json(await leads.post(f"/deals/{deal_id}/won", json={"signed_by": "Grace Hopper"}))
        assert won["status"] == "won"
        await bus.wait_for("deal.won", lead_id=lead_id)
        (issued,) = await bus.wait_for("invoice.issued", lead_id=lead_id)
        invoice_id = issued.data["invoice_id"]

        async def invoice_listed() -> list:
            return as_json(await billing.get("/invoices", params={"lead_id": lead_id}))

        invoices = await eventually(invoice_listed)
        assert [i["invoice_id"] for i in invoices] == [invoice_id]
        auth = as_json(await billing.get(f"/deals/{deal_id}/authorization"))
        assert auth["may_start"] is False

        # 3. the deposit is paid -> payment.succeeded, deposit.cleared -> work may start,
        #    leads moves the lead to `action`, retention knows the client and the revenue
        invoice = as_json(await billing.get(f"/invoices/{invoice_id}"))
        paid = await billing.post(
            "/payments",
            json={
                "invoice_id": invoice_id,
                "amount": invoice["amount_due"],
                "currency": "USD",
                "method": "bank_transfer",
                "reference": "WIRE-1",
            },
            headers={"Idempotency-Key": f"pay-{invoice_id}"},
        )
        assert paid.status_code == 201, paid.text
        await bus.wait_for("payment.succeeded", lead_id=lead_id)
        (cleared,) = await bus.wait_for("deposit.cleared", lead_id=lead_id)
        assert cleared.data["deal_id"] == deal_id
        assert as_json(await billing.get(f"/deals/{deal_id}/authorization"))["may_start"] is True

        async def in_action() -> bool:
            return as_json(await leads.get(f"/leads/{lead_id}"))["stage"] == "action"

        await eventually(in_action)

        async def client_known() -> dict:
            response = await retention.get(f"/clients/{lead_id}")
            if response.status_code != 200:
                return {}
            body = response.json()
            return body if body.get("revenue") and body.get("mrr") else {}

        client = await eventually(client_known)
        assert sum(Decimal(r["amount"]) for r in client["revenue"]) == Decimal(invoice["amount_due"])
        assert Decimal(client["mrr"]["amount"]) == Decimal("3000")

        # 4. a cancellation, confirmed -> cancellation.completed -> billing ends the
        #    subscription -> leads moves the lead to `churned`
        asked = await retention.post(
            f"/clients/{lead_id}/cancellation", json={"reason": "budget_cut", "comment": "cutting costs"}
        )
        assert asked.status_code == 201, asked.text
        cancellation_id = asked.json()["cancellation_id"]
        assert asked.json()["offer"]["kind"] == "pause"
        await bus.wait_for("cancellation.requested", lead_id=lead_id)
        confirmed = await retention.post(f"/cancellations/{cancellation_id}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        await bus.wait_for("cancellation.completed", lead_id=lead_id)
        (_ended,) = await bus.wait_for("subscription.cancelled", lead_id=lead_id)

        async def subscription_cancelled() -> bool:
            subs = as_json(await billing.get("/subscriptions", params={"lead_id": lead_id}))
            return bool(subs) and all(s["status"] == "cancelled" for s in subs)

        await eventually(subscription_cancelled)

        async def churned() -> bool:
            return as_json(await leads.get(f"/leads/{lead_id}"))["stage"] == "churned"

        await eventually(churned)
        stages = [t["to_stage"] for t in as_json(await leads.get(f"/leads/{lead_id}"))["timeline"]]
        assert stages == ["awareness", "decision", "action", "churned"]

        # Every event of the path is in one envelope, keyed by the person, with its producer.
        mine = bus.events(lead_id=lead_id)
        assert {e.producer for e in mine} == {"leads", "nurture", "billing", "retention"}
        keyed = [r for r, e in bus.seen if e is not None and str(e.lead_id) == lead_id]
        assert all(r.key == lead_id.encode() for r in keyed)

"""Agreements kept to the letter, end to end: ``clientflow run`` on the simulated clock (four
processes, the embedded broker, SQLite), driven through the public HTTP APIs and the signed
links a client clicks, the business clock moved with ``clock.advanced`` as ``clientflow clock
advance`` does.

One Persian-speaking client accepts an estimate through its link, pays the deposit, takes a
discount instead of leaving (the next invoice shows it and NRR counts the contraction) and is
later fired with notice (an offboarding e-mail in Persian, the subscription ended at the notice,
reported as a termination, not churn). Another client never pays the deposit: leads raises
``refuses_deposit`` with the invoice as evidence."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest

from clientflow.cli import _advance
from tests.e2e.conftest import System
from tests.support import TopicReader, as_json, eventually

pytestmark = pytest.mark.e2e


async def clock_now(system: System) -> datetime:
    async with httpx.AsyncClient(timeout=10) as http:
        nows = [
            datetime.fromisoformat((await http.get(f"{url}/health/live")).json()["clock"]["now"])
            for url in system.urls.values()
        ]
    return max(nows)


async def advance(system: System, moment: datetime) -> None:
    """Move the business clock and wait until every service follows it."""
    await _advance(system.bootstrap, days=0, hours=0, to=moment.isoformat())

    async def caught_up() -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            for url in system.urls.values():
                clock = (await http.get(f"{url}/health/live")).json()["clock"]
                if datetime.fromisoformat(clock["now"]) < moment:
                    return False
        return True

    await eventually(caught_up, timeout=60)


def on_leads(system: System, url: str) -> str:
    """A public link, reached where the leads service listens."""
    parts = urlsplit(url)
    return system.urls["leads"] + parts.path + (f"?{parts.query}" if parts.query else "")


def next_month(moment: datetime) -> datetime:
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


async def test_accept_by_link_discount_then_fired_and_a_deposit_never_paid(simulated_system: System) -> None:
    system = simulated_system
    tag = uuid.uuid4().hex[:8]
    async with (
        system.client("leads") as leads,
        system.client("nurture") as nurture,
        system.client("billing") as billing,
        system.client("retention") as retention,
        httpx.AsyncClient(timeout=30) as browser,
        TopicReader(system.bootstrap, "deals", "payments", "cancellations", master=system.master) as bus,
    ):
        start = await clock_now(system)
        await advance(system, start.replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=1))

        async def capture(name: str, email: str, **extra: object) -> str:
            body = {
                "name": name,
                "email": email,
                "company": f"{name} Co {tag}",
                "country": "IR",
                "language": "fa",
                "timezone": "Asia/Tehran",
                "channel": "seo",
                "budget": "20000",
                "currency": "EUR",
                "brief": "Monthly SEO and content for our online shop",
                "timeline": "next quarter",
                "needs": ["seo"],
                "consent_marketing": True,
                "legal_basis": "consent",
                **extra,
            }
            created = await leads.post("/leads", json=body)
            assert created.status_code == 201, created.text
            return created.json()["lead_id"]

        retainer = {
            "title": "SEO retainer",
            "kind": "retainer",
            "currency": "EUR",
            "monthly_fee": "2000",
            "included_hours": "10",
            "hourly_rate": "150",
        }

        # 1. The estimate, accepted by the client through its signed link.
        lead_id = await capture("Shirin Ahmadi", f"shirin-{tag}@example.ir")
        deal = as_json(await leads.post(f"/leads/{lead_id}/deals", json=retainer))
        deal_id, link = deal["deal_id"], on_leads(system, deal["acceptance_url"])
        page = await browser.get(link)
        assert page.status_code == 200 and 'lang="fa"' in page.text and 'dir="rtl"' in page.text
        accepted = await browser.post(link, data={"name": "شیرین احمدی"})
        assert accepted.status_code == 200, accepted.text
        again = await browser.post(link, data={"name": "شیرین احمدی"})
        assert again.status_code == 409  # accepted once; the link changes nothing more
        (won,) = await bus.wait_for("deal.won", lead_id=uuid.UUID(lead_id))
        assert won.data["signed_via"] == "link" and won.data["digest"] == deal["digest"]
        shown = as_json(await leads.get(f"/deals/{deal_id}"))
        assert (shown["status"], shown["signed_via"], shown["accepted_digest"]) == ("won", "link", deal["digest"])

        # 2. The deposit, paid: the retainer starts and its first period is billed.
        async def open_invoices(kind: str | None = None) -> list[dict]:
            items = as_json(await billing.get("/invoices", params={"lead_id": lead_id, "status": "open"}))
            return [i for i in items if kind is None or i["kind"] == kind]

        (deposit,) = await eventually(lambda: open_invoices("deposit"))

        async def pay(invoice: dict) -> None:
            paid = await billing.post(
                "/payments",
                json={
                    "invoice_id": invoice["invoice_id"],
                    "amount": invoice["amount_due"],
                    "currency": "EUR",
                    "method": "bank_transfer",
                    "reference": f"wire-{invoice['number']}",
                },
                headers={"Idempotency-Key": f"pay-{invoice['invoice_id']}"},
            )
            assert paid.status_code == 201, paid.text

        await pay(deposit)
        await bus.wait_for("deposit.cleared", lead_id=uuid.UUID(lead_id))
        first = await eventually(lambda: open_invoices("subscription"))
        for invoice in first:
            await pay(invoice)

        # 3. Wants to leave over price: a discount, taken; the next invoice shows it.
        # Retention learns of the subscription from billing's events, a moment after billing shows
        # its invoices: until then the request is refused with 409 and changes nothing.
        async def ask_to_leave() -> httpx.Response | None:
            answer = await retention.post(f"/clients/{lead_id}/cancellation", json={"reason": "price"})
            return None if answer.status_code == 409 else answer

        asked = as_json(await eventually(ask_to_leave))
        assert asked["offer"]["kind"] == "discount" and asked["offer"]["fee"] == "1600.00"
        as_json(await retention.post(f"/cancellations/{asked['cancellation_id']}/accept"))
        (changed,) = await bus.wait_for("subscription.price_changed", lead_id=uuid.UUID(lead_id))
        period = datetime.fromisoformat(changed.data["effective_at"])
        await advance(system, period + timedelta(hours=1))

        async def discounted() -> list[dict]:
            return [
                i
                for i in await open_invoices("subscription")
                if (i["period_start"] or "").startswith(f"{period:%Y-%m-%d}")
            ]

        (next_invoice,) = await eventually(discounted)
        assert next_invoice["amount"] == "1600.00"
        assert any(line["description"].startswith("Save offer: 20% off") for line in next_invoice["lines"])
        await pay(next_invoice)
        economics = {"from": f"{period:%Y-%m-%d}", "to": f"{next_month(period):%Y-%m-%d}", "currency": "EUR"}
        economics["channel"] = "seo"

        async def contraction() -> dict | None:
            body = as_json(await retention.get("/economics", params=economics))
            return body if Decimal(body["mrr_movements"]["contraction"]) == 400 else None

        month = await eventually(contraction, timeout=60)
        assert Decimal(month["nrr"]) == Decimal("0.8") and Decimal(month["grr"]) == Decimal("0.8")

        # 4. Later fired with 14 days' notice: offboarding in Persian, billing ends at the notice.
        fired = await retention.post(
            f"/clients/{lead_id}/termination", json={"reason": "fired", "notice_days": 14, "comment": "abuse"}
        )
        assert fired.status_code == 201, fired.text
        effective = datetime.fromisoformat(fired.json()["effective_at"])
        twice = await retention.post(f"/clients/{lead_id}/termination", json={"reason": "fired", "notice_days": 14})
        assert twice.status_code == 409
        (terminated,) = await bus.wait_for("client.terminated", lead_id=uuid.UUID(lead_id))
        assert terminated.data["reason"] == "fired"

        async def offboarding() -> list[dict]:
            messages = as_json(await nurture.get(f"/leads/{lead_id}/messages"))
            return [m for m in messages if m.get("sequence") == "offboarding"]

        (notice, *_) = await eventually(offboarding, timeout=60)
        assert notice["language"] == "fa" and re.search(r"[\u0600-\u06FF]", notice["subject"]), notice
        await advance(system, effective + timedelta(hours=1))
        (ended,) = await bus.wait_for("subscription.cancelled", lead_id=uuid.UUID(lead_id), timeout=60)
        assert ended.data["reason"] == "terminated:fired"
        loss = {"from": f"{period:%Y-%m-%d}", "to": f"{effective + timedelta(days=1):%Y-%m-%d}", "currency": "EUR"}
        loss["channel"] = "seo"

        async def reported() -> dict | None:
            body = as_json(await retention.get("/economics", params=loss))
            return body if body["terminations"]["count"] == 1 else None

        after = await eventually(reported, timeout=60)
        assert after["terminations"]["by_reason"] == {"fired": 1}
        assert after["logo_churn"]["lost"] == 0 and Decimal(after["mrr_movements"]["churn"]) == 0

        # 5. Another client never pays the deposit: `refuses_deposit`, with the invoice as evidence.
        other = await capture("Dariush Karimi", f"dariush-{tag}@example.ir")
        other_deal = as_json(await leads.post(f"/leads/{other}/deals", json=retainer))
        as_json(await leads.post(f"/deals/{other_deal['deal_id']}/won", json={"signed_by": "Dariush Karimi"}))

        async def unpaid() -> list[dict]:
            items = as_json(await billing.get("/invoices", params={"lead_id": other, "status": "open"}))
            return [i for i in items if i["kind"] == "deposit"]

        (unpaid_deposit,) = await eventually(unpaid)
        due = datetime.fromisoformat(unpaid_deposit["due_at"])
        await advance(system, due + timedelta(days=8))

        async def flagged() -> list[dict]:
            found = as_json(await leads.get(f"/leads/{other}"))["red_flags"]
            return [f for f in found if f["name"] == "refuses_deposit"]

        (flag,) = await eventually(flagged, timeout=60)
        assert unpaid_deposit["number"] in flag["evidence"] and flag["source"] == "billing"

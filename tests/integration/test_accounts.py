"""Company accounts on a real broker and databases (leads, billing and retention on one broker):
a second person at the same company is linked to one account, never merged; leads answers the
account with its people, deals and stages; billing and retention fold the account from
``lead.captured`` (``GET /invoices?account_id=``, ``GET /clients?account_id=``, retention's
``GET /accounts/{id}``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.billing.app import create_app as billing_app
from services.billing.settings import Settings as BillingSettings
from services.leads.app import create_app as leads_app
from services.leads.settings import Settings as LeadsSettings
from services.retention.app import create_app as retention_app
from services.retention.settings import Settings as RetentionSettings
from shared import events as ev
from shared import topics
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def databases(database_factory) -> dict[str, str]:
    """One database per service (made outside the event loop: PostgreSQL's are created with asyncio.run)."""
    return {name: database_factory(name) for name in ("leads", "billing", "retention")}


@pytest.fixture
async def services(kafka_bootstrap: str, databases: dict[str, str]):
    leads_settings = service_settings(LeadsSettings, bootstrap=kafka_bootstrap, database_url=databases["leads"])
    billing_settings = service_settings(BillingSettings, bootstrap=kafka_bootstrap, database_url=databases["billing"])
    retention_settings = service_settings(
        RetentionSettings, bootstrap=kafka_bootstrap, database_url=databases["retention"]
    )
    async with (
        run_service(leads_app(leads_settings), leads_settings.port) as leads,
        run_service(billing_app(billing_settings), billing_settings.port) as billing,
        run_service(retention_app(retention_settings), retention_settings.port) as retention,
    ):
        yield leads, billing, retention


def person(name: str, email: str, company: str | None, **more: object) -> dict:
    return {"name": name, "email": email, "company": company, "channel": "website", **more}


def won(lead_id: str, total: str) -> ev.Envelope:
    payload = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Website relaunch",
        kind="project",
        currency="EUR",
        lines=[ev.ScopeLine(description="Work", hours=Decimal(20), amount=Decimal(total))],
        total=Decimal(total),
        signed_by="Ada",
        signed_at=datetime.now(UTC),
        deposit_share=Decimal("0.30"),
    )
    return event("deal.won", payload, lead_id=uuid.UUID(lead_id), producer_name="leads")


async def test_people_of_one_company_share_an_account_and_are_never_merged(services, kafka_bootstrap: str) -> None:
    leads, billing, retention = services
    tag = uuid.uuid4().hex[:8]
    domain = f"acme-{tag}.example"
    async with TopicReader(kafka_bootstrap, topics.LEADS) as bus:
        ada = await leads.client.post("/leads", json=person("Ada Lovelace", f"ada@{domain}", f"Acme {tag} Ltd"))
        assert ada.status_code == 201
        ada_id = ada.json()["lead_id"]
        # A colleague: another person, same work domain, same company name once normalised.
        bob = await leads.client.post("/leads", json=person("Bob Byron", f"bob@{domain}", f"ACME {tag}"))
        assert bob.status_code == 201 and not bob.json().get("duplicate")
        bob_id = bob.json()["lead_id"]
        assert bob_id != ada_id
        # Free mail says nothing of a company; another name at the same domain is another company.
        carol_id = as_json(
            await leads.client.post("/leads", json=person("Carol", f"carol.{tag}@gmail.com", f"Acme {tag}"))
        )["lead_id"]
        dave_id = as_json(
            await leads.client.post("/leads", json=person("Dave", f"dave@{domain}", f"Other {tag} GmbH"))
        )["lead_id"]

        ada_lead = as_json(await leads.client.get(f"/leads/{ada_id}"))
        account_id = ada_lead["account_id"]
        assert account_id is not None
        assert as_json(await leads.client.get(f"/leads/{bob_id}"))["account_id"] == account_id
        assert as_json(await leads.client.get(f"/leads/{carol_id}"))["account_id"] is None
        other = as_json(await leads.client.get(f"/leads/{dave_id}"))["account_id"]
        assert other is not None and other != account_id

        # lead.captured carries the account so other services can group by it.
        captured = (await bus.wait_for("lead.captured", lead_id=bob_id))[0].data
        assert captured["account_id"] == account_id and captured["account_name"] == f"Acme {tag} Ltd"
        assert (await bus.wait_for("lead.captured", lead_id=carol_id))[0].data["account_id"] is None

    # The CSV import links its rows the same way.
    csv = (
        "name,email,company,channel\n"
        f"Eve Imported,eve@{domain},Acme {tag} Limited,event\n"
        f"Fay Freemail,fay.{tag}@yahoo.com,Acme {tag},event\n"
    )
    report = as_json(
        await leads.client.post("/leads/import", content=csv.encode(), headers={"content-type": "text/csv"})
    )
    assert report["accepted"] == 2, report
    imported = {
        item["email"]: item["account_id"]
        for item in as_json(await leads.client.get("/leads", params={"q": tag, "limit": 50}))["items"]
    }
    assert imported[f"eve@{domain}"] == account_id and imported[f"fay.{tag}@yahoo.com"] is None

    # The same person again (same address): a touch, filling only what is still empty.
    again = await leads.client.post(
        "/leads",
        json=person("Ada Lovelace", f"ada@{domain}", "Something Else", job_title="CTO", industry="software"),
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["lead_id"] == ada_id
    ada_lead = as_json(await leads.client.get(f"/leads/{ada_id}"))
    assert ada_lead["job_title"] == "CTO" and ada_lead["industry"] == "software"
    assert ada_lead["company"] == f"Acme {tag} Ltd"  # never overwritten

    # The account with its people, their deals and stages.
    deal = as_json(
        await leads.client.post(
            f"/leads/{ada_id}/deals",
            json={
                "title": "Website relaunch",
                "kind": "project",
                "currency": "EUR",
                "lines": [{"description": "Design and build", "hours": "40", "amount": "4000"}],
            },
        )
    )
    account = as_json(await leads.client.get(f"/accounts/{account_id}"))
    assert account["name"] == f"Acme {tag} Ltd" and account["domain"] == domain
    assert [p["lead_id"] for p in account["people"]][:2] == [ada_id, bob_id] and len(account["people"]) == 3
    assert account["people"][0]["deals"][0]["deal_id"] == deal["deal_id"]
    assert account["people"][1]["deals"] == []
    assert sum(account["stages"].values()) == 3
    missing = await leads.client.get(f"/accounts/{uuid.uuid4()}")
    assert missing.status_code == 404 and "account" in missing.text
    assert (await leads.client.get("/accounts/not-a-uuid")).status_code == 422

    # Billing folds the account: the invoices of the company's people.
    async with producer(kafka_bootstrap) as p:
        await publish(p, won(ada_id, "3000"))
        await publish(p, won(dave_id, "1000"))

    async def account_invoices() -> list[dict]:
        items = as_json(await billing.client.get("/invoices", params={"account_id": account_id}))
        return items if items else []

    invoices = await eventually(account_invoices)
    assert {i["lead_id"] for i in invoices} == {ada_id}
    others = await eventually(lambda: _nonempty(billing.client.get("/invoices", params={"account_id": other})))
    assert {i["lead_id"] for i in others} == {dave_id}
    assert (await billing.client.get("/invoices", params={"account_id": "x"})).status_code == 422

    # Paying the deposit makes Ada a client; retention groups clients by account.
    deposit = invoices[0]
    paid = await billing.client.post(
        "/payments",
        json={
            "invoice_id": deposit["invoice_id"],
            "amount": deposit["amount"],
            "currency": "EUR",
            "method": "bank_transfer",
            "reference": "TRF-1",
        },
    )
    assert paid.status_code == 201, paid.text

    async def account_clients() -> dict:
        found = as_json(await retention.client.get("/clients", params={"account_id": account_id}))
        return found if found["total"] == 1 and found["items"][0]["health_score"] is not None else {}

    clients = await eventually(account_clients)
    assert clients["items"][0]["lead_id"] == ada_id and clients["items"][0]["account_id"] == account_id
    figures = as_json(await retention.client.get(f"/accounts/{account_id}"))
    assert [c["lead_id"] for c in figures["clients"]] == [ada_id]
    assert [(Decimal(m["amount"]), m["currency"]) for m in figures["revenue"]] == [(Decimal(deposit["amount"]), "EUR")]
    assert figures["worst_health"] == clients["items"][0]["health_score"]
    assert Decimal(figures["average_health"]) == Decimal(clients["items"][0]["health_score"])
    assert (await retention.client.get(f"/accounts/{uuid.uuid4()}")).status_code == 404


async def _nonempty(request) -> list[dict]:  # type: ignore[no-untyped-def]
    items = as_json(await request)
    return items if items else []

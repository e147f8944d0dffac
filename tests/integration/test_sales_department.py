"""The sales department on a real broker and database: reps added as people, leads landing on
the rep who speaks their language, `owner=me`, reassignment when a rep is disabled, speed to
lead on the simulated business clock, activities, the hand-off at a won deal, and each rep's
figures with the commission worked out by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from clientflow.cli import _advance
from services.leads.app import create_app
from services.leads.settings import Settings
from shared import events as ev
from shared import topics
from shared.embedded import EmbeddedBroker
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


def a_monday_morning() -> datetime:
    """Monday 2030-01-07 10:00 UTC (10:00 in London, 16:00 in Dhaka, 13:30 in Tehran)."""
    return datetime(2030, 1, 7, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own: its clock topic starts empty, so the business clock can
    be set to a working Monday whatever other tests set on theirs."""
    broker = EmbeddedBroker(log_file=tmp_path_factory.mktemp("sales-broker") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
async def leads(own_broker: str, database_url: str):
    settings = service_settings(
        Settings, bootstrap=own_broker, database_url=database_url, clock="simulated", currencies=("EUR", "GBP")
    )
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


async def add(leads, email: str, role: str, languages: list[str]) -> tuple[str, httpx.AsyncClient]:
    made = as_json(
        await leads.client.post(
            "/people", json={"email": email, "name": email.split("@")[0].title(), "role": role, "languages": languages}
        )
    )
    client = httpx.AsyncClient(
        base_url=leads.url, headers={"Authorization": f"Bearer {made['token']['token']}"}, timeout=30
    )
    return made["person_id"], client


def lead(language: str, country: str, zone: str) -> dict:
    return {
        "name": f"Lead {language} {uuid.uuid4().hex[:4]}",
        "email": f"{uuid.uuid4().hex[:10]}@{language}-client.example",
        "company": f"Company {uuid.uuid4().hex[:6]}",
        "channel": "website",
        "country": country,
        "language": language,
        "timezone": zone,
    }


async def test_a_sales_department_from_capture_to_commission(leads, own_broker: str) -> None:
    kafka_bootstrap = own_broker
    monday = a_monday_morning()
    await _advance(kafka_bootstrap, days=0, hours=0, to=monday.isoformat())
    await eventually(lambda: _at(leads, monday))
    tag = uuid.uuid4().hex[:6]
    anna, anna_http = await add(leads, f"anna-{tag}@agency.example", "sales", ["en"])
    bashir, bashir_http = await add(leads, f"bashir-{tag}@agency.example", "sales", ["bn", "en"])
    cyrus, cyrus_http = await add(leads, f"cyrus-{tag}@agency.example", "sales", ["fa", "en"])
    sam, sam_http = await add(leads, f"sam-{tag}@agency.example", "success", ["en"])
    boss, boss_http = await add(leads, f"boss-{tag}@agency.example", "admin", ["en"])
    vera, vera_http = await add(leads, f"vera-{tag}@agency.example", "viewer", [])
    try:
        # Each lead lands on the rep who speaks its language; English goes round-robin.
        bn = as_json(await leads.client.post("/leads", json=lead("bn", "BD", "Asia/Dhaka")))["lead_id"]
        fa = as_json(await leads.client.post("/leads", json=lead("fa", "IR", "Asia/Tehran")))["lead_id"]
        en = as_json(await leads.client.post("/leads", json=lead("en", "GB", "Europe/London")))["lead_id"]
        owners = {
            k: as_json(await leads.client.get(f"/leads/{v}"))["owner_id"]
            for k, v in (("bn", bn), ("fa", fa), ("en", en))
        }
        assert owners == {"bn": bashir, "fa": cyrus, "en": anna}
        london = as_json(await leads.client.get(f"/leads/{en}"))
        # Captured Monday 10:00 London: four business hours later.
        assert datetime.fromisoformat(london["first_touch_due_at"]) == monday + timedelta(hours=4)

        mine = as_json(await bashir_http.get("/leads", params={"owner": "me"}))
        assert [item["lead_id"] for item in mine["items"]] == [bn]
        assert (await leads.client.get("/leads", params={"owner": "banana"})).status_code == 422
        assert "owner" in (await leads.client.get("/leads", params={"owner": "me"})).text  # the bootstrap key is nobody

        # Owners must be active people in sales, success or admin.
        refused = await leads.client.put(f"/leads/{en}/owner", json={"owner_id": vera})
        assert refused.status_code == 422 and "owner_id" in refused.text and "viewer" in refused.text
        assert (await vera_http.put(f"/leads/{en}/owner", json={"owner_id": anna})).status_code == 403

        # A disabled rep's open leads go back to the pool and are assigned again.
        async with TopicReader(kafka_bootstrap, topics.LEADS, topics.TASKS) as bus:
            assert (await leads.client.post(f"/people/{cyrus}/disable")).status_code == 200
            moved = await bus.wait_for("lead.assigned", lead_id=fa)
            assert moved[0].data["previous_owner_id"] == cyrus
            assert moved[0].data["owner_id"] in (anna, bashir)
            refused = await leads.client.put(f"/leads/{bn}/owner", json={"owner_id": cyrus})
            assert refused.status_code == 422 and "disabled" in refused.text

            # Anna calls her lead (the first touch) and plans a next step: a task for her.
            call = await anna_http.post(
                f"/leads/{en}/activities",
                json={"kind": "call", "outcome": "interested", "next_step": "send the estimate"},
            )
            assert call.status_code == 201, call.text
            (next_step,) = await bus.wait_for("task.raised", lead_id=en)
            assert next_step.data["kind"] == "next_step" and next_step.data["owner_id"] == anna
            assert as_json(await leads.client.get(f"/leads/{en}"))["first_touched_at"] is not None
            bad = await anna_http.post(f"/leads/{en}/activities", json={"kind": "fax"})
            assert bad.status_code == 422 and "kind" in bad.text

            # A tender for the Bengali lead, due Wednesday 18:00 in Dhaka: its reminder comes 16
            # business hours before, Tuesday 09:00 Dhaka (03:00 UTC).
            tender = await bashir_http.post(
                f"/leads/{bn}/deals",
                json={
                    "title": "Tender: city portal",
                    "kind": "project",
                    "currency": "EUR",
                    "submission_deadline": (monday + timedelta(days=2, hours=2)).isoformat(),
                    "lines": [{"description": "Portal", "hours": "200", "amount": "20000"}],
                },
            )
            assert tender.status_code == 201, tender.text
            past = await bashir_http.post(
                f"/leads/{bn}/deals",
                json={
                    "title": "Late",
                    "kind": "project",
                    "currency": "EUR",
                    "submission_deadline": "2029-01-01T00:00:00Z",
                    "lines": [{"description": "x", "hours": "1", "amount": "100"}],
                },
            )
            assert past.status_code == 422 and "submission_deadline" in past.text

            # Business hours in each lead's zone: captured Monday 16:00 in Dhaka (one hour left
            # that day) and 13:30 in Tehran, both are due Tuesday 06:00 UTC; at Tuesday 07:00 the
            # admin gets an escalation for each, once. Anna's (London) was touched in time.
            bengali = as_json(await leads.client.get(f"/leads/{bn}"))
            assert datetime.fromisoformat(bengali["first_touch_due_at"]) == monday + timedelta(hours=20)
            await _advance(kafka_bootstrap, days=0, hours=0, to=(monday + timedelta(hours=21)).isoformat())
            raised = await bus.wait_for("task.raised", lead_id=bn, count=2, timeout=30)
            kinds = {e.data["kind"]: e.data for e in raised}
            assert kinds["first_touch_overdue"]["owner_id"] == boss
            assert kinds["tender_deadline"]["owner_id"] == bashir
            assert len(raised) == 2, [e.data for e in raised]
            await bus.wait_for("task.raised", lead_id=fa, timeout=30)
            assert [e for e in bus.events("task.raised", lead_id=en) if e.data["kind"] == "first_touch_overdue"] == []

            # A won deal hands the client to the account owner with a hand-off task.
            deal = as_json(
                await anna_http.post(
                    f"/leads/{en}/deals",
                    json={
                        "title": "Site",
                        "kind": "project",
                        "currency": "EUR",
                        "lines": [{"description": "Build", "hours": "100", "amount": "10000"}],
                    },
                )
            )
            won = as_json(await anna_http.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": "Client"}))
            handed = [e for e in await bus.wait_for("lead.assigned", lead_id=en) if e.data["role"] == "account"]
            assert handed and handed[0].data["owner_id"] == sam
            handoff = [e for e in await bus.wait_for("task.raised", lead_id=en, count=2) if e.data["kind"] == "handoff"]
            assert handoff and handoff[0].data["owner_id"] == sam

        # The plan and quotas, bad ones refused by field.
        too_much = await boss_http.put(
            "/team/commission-plan", json={"currency": "EUR", "deposit_share": "0.7", "first_year_share": "0.4"}
        )
        assert too_much.status_code == 422 and "100%" in too_much.text
        plan = {"currency": "EUR", "deposit_share": "0.10", "first_year_share": "0.05", "monthly_cap": "5000"}
        assert (await boss_http.put("/team/commission-plan", json=plan)).status_code == 200
        month = f"{monday.year:04d}-{monday.month:02d}"
        usd = await boss_http.put(
            "/team/quotas", json={"quotas": [{"person_id": anna, "month": month, "amount": "20000", "currency": "USD"}]}
        )
        assert usd.status_code == 422 and "currency" in usd.text
        quota = {"quotas": [{"person_id": anna, "month": month, "amount": "20000", "currency": "EUR"}]}
        assert (await boss_http.put("/team/quotas", json=quota)).status_code == 200
        rules = {"rules": [{"name": "viewers", "people": [vera]}]}
        bad_rules = await boss_http.put("/assignment/rules", json=rules)
        assert bad_rules.status_code == 422 and "rules[0].people[0]" in bad_rules.text

        # Billing says the deposit cleared and an invoice was paid: Anna's commission follows.
        deposit_invoice, invoice = uuid.uuid4(), uuid.uuid4()
        paid_at = monday + timedelta(hours=22)
        async with producer(kafka_bootstrap) as p:
            for envelope in (
                event(
                    "payment.succeeded",
                    ev.PaymentSucceeded(
                        payment_id=uuid.uuid4(),
                        invoice_id=deposit_invoice,
                        amount=Decimal("3000"),
                        currency="EUR",
                        method="card",
                        paid_at=paid_at,
                        invoice_paid=True,
                    ),
                    lead_id=uuid.UUID(en),
                    producer_name="billing",
                ),
                event(
                    "deposit.cleared",
                    ev.DepositCleared(
                        deal_id=uuid.UUID(won["deal_id"]),
                        invoice_id=deposit_invoice,
                        amount=Decimal("3000"),
                        currency="EUR",
                        cleared_at=paid_at,
                    ),
                    lead_id=uuid.UUID(en),
                    producer_name="billing",
                ),
                event(
                    "payment.succeeded",
                    ev.PaymentSucceeded(
                        payment_id=uuid.uuid4(),
                        invoice_id=invoice,
                        amount=Decimal("7000"),
                        currency="EUR",
                        method="card",
                        paid_at=paid_at,
                        invoice_paid=True,
                    ),
                    lead_id=uuid.UUID(en),
                    producer_name="billing",
                ),
            ):
                await publish(p, envelope)
        period = {"from": monday.date().isoformat(), "to": (monday + timedelta(days=2)).date().isoformat()}

        async def anna_paid() -> dict:
            figures = as_json(await boss_http.get("/team/performance", params=period))
            (mine,) = [r for r in figures["reps"] if r["person_id"] == anna]
            return mine if mine["first_year_revenue"] else {}

        figures = await eventually(anna_paid)
        # 10% of the 3,000 deposit + 5% of the 7,000 invoice = 300 + 350 (the deposit invoice's
        # own payment is the deposit, not counted twice).
        assert figures["commission"] == {"amount": "650.00", "currency": "EUR"}
        assert figures["deposits_cleared"] == [{"amount": "3000", "currency": "EUR"}]
        assert figures["first_year_revenue"] == [{"amount": "10000", "currency": "EUR"}]
        assert figures["won_value"] == [{"amount": "10000", "currency": "EUR"}]
        assert figures["quota"] == {"amount": "20000", "currency": "EUR"} and Decimal(figures["attainment"]) == Decimal(
            "0.5"
        )
        assert figures["leads_owned"] == 1 + (moved[0].data["owner_id"] == anna) and figures["win_rate"] == 1.0
        assert figures["first_touch_median_hours"] is not None
        # A rep reads only their own figures.
        own = as_json(await bashir_http.get("/team/performance", params=period))
        assert [r["person_id"] for r in own["reps"]] == [bashir]
        assert (await vera_http.get("/team/performance", params=period)).status_code == 403
    finally:
        for client in (anna_http, bashir_http, cyrus_http, sam_http, boss_http, vera_http):
            await client.aclose()


async def _at(leads, moment: datetime) -> bool:
    return leads.runtime.clock.now() >= moment

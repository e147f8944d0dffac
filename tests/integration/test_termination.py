"""Ending a relationship on the agency's side, through all four services in one process on the
real broker and databases, with one business clock moved by the test: a Persian retainer client
is terminated (``fired``, 14 days' notice); the offboarding notice goes out in Persian; past the
notice billing ends the subscription (``terminated:fired``) and issues the final invoice for the
hours over the included ones; the economics count a termination, not churn; a new lead from the
same company domain is flagged ``terminated_before`` and quoted at three times the price."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from services.billing.app import create_app as billing_app
from services.billing.settings import Settings as BillingSettings
from services.leads.app import create_app as leads_app
from services.leads.settings import Settings as LeadsSettings
from services.nurture.app import create_app as nurture_app
from services.nurture.settings import Settings as NurtureSettings
from services.retention import economics as retention_economics
from services.retention import termination as retention_terminations
from services.retention.api import economics_out
from services.retention.app import create_app as retention_app
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.replay import replay
from services.retention.settings import Settings as RetentionSettings
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import create_engine
from shared.events import make_event
from shared.uow import UnitOfWorkFactory
from tests.access.support import add_person
from tests.conftest import fresh_database
from tests.integration.test_billing_retainers import billing_app as billing_test_app
from tests.integration.test_billing_service import deal_won, invoices_of, pay, send
from tests.support import TopicReader, as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration

START = datetime(2031, 3, 3, 9, tzinfo=UTC)  # a Monday, 12:30 in Tehran


@pytest.fixture
def databases(_postgres_server, tmp_path):  # made before the event loop runs
    made = {
        name: fresh_database(_postgres_server, tmp_path, name)
        for name in ("leads", "nurture", "billing", "retention", "rebuilt")
    }
    yield {name: next(gen) for name, gen in made.items()}
    for gen in made.values():
        for _ in gen:
            pass


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ManualClock(SimulatedClock):
    """Business time moved only by the test (not by the shared clock topic)."""

    simulated = False


async def test_the_agency_fires_a_client(kafka_bootstrap: str, databases: dict[str, str], tmp_path) -> None:
    clock = ManualClock(START)
    tag = uuid.uuid4().hex[:8]
    domain = f"ghasem-{tag}.example"
    common = {"bootstrap": kafka_bootstrap}
    leads_s = service_settings(LeadsSettings, database_url=databases["leads"], **common)
    nurture_s = service_settings(
        NurtureSettings,
        database_url=databases["nurture"],
        data_dir=tmp_path / "nurture",
        send_interval_s=0.1,
        quiet_hours_start=0,
        quiet_hours_end=0,
        **common,
    )
    billing_s = service_settings(BillingSettings, database_url=databases["billing"], **common)
    retention_s = service_settings(
        RetentionSettings, database_url=databases["retention"], review_interval_s=0.5, **common
    )
    async with (
        run_service(leads_app(leads_s, clock=clock), leads_s.port) as leads,
        run_service(nurture_app(nurture_s, clock=clock), nurture_s.port) as nurture,
        run_service(billing_app(billing_s, clock=clock), billing_s.port) as billing,
        run_service(retention_app(retention_s, clock=clock), retention_s.port) as retention,
        TopicReader(kafka_bootstrap, topics.CANCELLATIONS, topics.PAYMENTS) as bus,
    ):
        # A Persian client on a retainer: 1000 a month, 10 hours included, 100 an hour over.
        created = as_json(
            await leads.client.post(
                "/leads",
                json={
                    "name": "Dariush Ghasemi",
                    "email": f"dariush@{domain}",
                    "company": "Ghasemi Trading Ltd",
                    "language": "fa",
                    "timezone": "Asia/Tehran",
                    "country": "IR",
                    "channel": "website",
                    "budget": "12000",
                    "currency": "EUR",
                    "brief": "Monthly SEO",
                    "needs": ["seo"],
                },
            )
        )
        lead_id = created["lead_id"]
        deal = as_json(
            await leads.client.post(
                f"/leads/{lead_id}/deals",
                json={
                    "title": "SEO retainer",
                    "kind": "retainer",
                    "currency": "EUR",
                    "monthly_fee": "1000",
                    "included_hours": "10",
                    "hourly_rate": "100",
                },
            )
        )
        as_json(await leads.client.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": "Dariush Ghasemi"}))

        async def deposit() -> list[dict]:
            return as_json(await billing.client.get("/invoices", params={"lead_id": lead_id}))

        (invoice,) = await eventually(deposit, timeout=30)
        paid = await billing.client.post(
            "/payments",
            json={
                "invoice_id": invoice["invoice_id"],
                "amount": invoice["amount"],
                "currency": "EUR",
                "method": "bank_transfer",
                "reference": "TRF-1",
            },
        )
        assert paid.status_code in (200, 201), paid.text

        async def subscription() -> list[dict]:
            subs = as_json(await billing.client.get("/subscriptions", params={"lead_id": lead_id}))
            return [s for s in subs if s["status"] == "active"]

        (sub,) = await eventually(subscription, timeout=30)
        # 12 hours worked this period: 2 over the 10 included, never invoiced yet.
        for hours in ("7", "5"):
            logged = await billing.client.post(
                "/time-entries", json={"subscription_id": sub["subscription_id"], "hours": hours}
            )
            assert logged.status_code == 201, logged.text

        async def a_client() -> dict | None:
            found = await retention.client.get(f"/clients/{lead_id}")
            if found.status_code != 200:
                return None
            body = found.json()
            return body if body["subscription_status"] == "active" and body["became_client_at"] else None

        await eventually(a_client, timeout=30)

        async def paying() -> bool:
            return as_json(await leads.client.get(f"/leads/{lead_id}"))["stage"] == "action"

        await eventually(paying, timeout=30)  # leads saw the deposit clear

        # Bad requests change nothing.
        url = f"/clients/{lead_id}/termination"
        bad = await retention.client.post(url, json={"reason": "bored"})
        assert bad.status_code == 422 and "reason" in bad.text
        for days in (-1, 366):
            bad = await retention.client.post(url, json={"reason": "fired", "notice_days": days})
            assert bad.status_code == 422 and "notice_days" in bad.text
        unknown = await retention.client.post(f"/clients/{uuid.uuid4()}/termination", json={"reason": "fired"})
        assert unknown.status_code == 404
        _, viewer = await add_person(retention.runtime.uow.sessions, "viewer")
        refused = await retention.client.post(url, json={"reason": "fired"}, headers=bearer(viewer))
        assert refused.status_code == 403
        assert as_json(await retention.client.get(f"/clients/{lead_id}"))["termination"] is None

        # The agency fires the client with 14 days' notice.
        done = await retention.client.post(url, json={"reason": "fired", "notice_days": 14, "comment": "rude to staff"})
        assert done.status_code == 201, done.text
        termination = done.json()
        effective_at = START + timedelta(days=14)
        assert datetime.fromisoformat(termination["effective_at"]) == effective_at
        assert (termination["reason"], termination["notice_days"], termination["status"]) == ("fired", 14, "notice")
        assert termination["subscription_ids"] == [sub["subscription_id"]]
        again = await retention.client.post(url, json={"reason": "other"})
        assert again.status_code == 409 and "already terminated" in again.text and "notice" in again.text
        shown = as_json(await retention.client.get(f"/clients/{lead_id}"))["termination"]
        assert shown["termination_id"] == termination["termination_id"] and shown["status"] == "notice"

        (announced,) = await bus.wait_for("client.terminated", lead_id=lead_id)
        assert announced.data["termination_id"] == termination["termination_id"]
        assert announced.data["reason"] == "fired" and announced.data["notice_days"] == 14
        assert announced.data["subscription_ids"] == [sub["subscription_id"]]
        metrics = (await retention.client.get("/metrics")).text
        assert 'clientflow_retention_terminations_total{reason="fired"}' in metrics

        # Offboarding: the notice at once, in Persian, though the client gave no marketing consent.
        async def offboarding() -> list[dict]:
            sent = as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))
            return [m for m in sent if m["sequence"] == "offboarding"]

        (notice,) = await eventually(offboarding, timeout=30)
        assert notice["template"] == "offboarding_notice" and notice["category"] == "transactional"
        assert notice["language"] == "fa" and "همکاری" in notice["subject"]
        assert effective_at.date().isoformat() in notice["subject"]

        # Leads: the person is churned at once (the agency decided it).
        async def churned() -> bool:
            return as_json(await leads.client.get(f"/leads/{lead_id}"))["stage"] == "churned"

        await eventually(churned, timeout=30)
        # Nothing ends before the notice runs out.
        assert not bus.events("subscription.cancelled", lead_id=lead_id)

        # Past the notice: the subscription ends as a termination and the final invoice follows.
        clock.advance_to(effective_at + timedelta(hours=1))
        (cancelled,) = await bus.wait_for("subscription.cancelled", lead_id=lead_id, timeout=30)
        assert cancelled.data["reason"] == "terminated:fired"
        assert datetime.fromisoformat(cancelled.data["effective_at"]) == effective_at

        async def final() -> list:
            return [e for e in bus.events("invoice.issued", lead_id=lead_id) if e.data["kind"] == "final"]

        (final_invoice,) = await eventually(final, timeout=30)
        # By hand: 12 hours - 10 included = 2 hours x 100 = 200.
        assert Decimal(final_invoice.data["amount"]) == Decimal("200")
        assert len(final_invoice.data["lines"]) == 1 and "2" in final_invoice.data["lines"][0]["description"]
        assert not [e for e in bus.events("invoice.issued", lead_id=lead_id) if e.data["kind"] == "overage"]
        # No cancellation was made up for it: a termination is not a cancellation.
        assert not bus.events("cancellation.completed", lead_id=lead_id)

        async def ended() -> dict | None:
            client = as_json(await retention.client.get(f"/clients/{lead_id}"))
            done = client["termination"]["status"] == "ended" and client["subscription_status"] == "cancelled"
            return client if done else None

        await eventually(ended, timeout=30)

        async def figures() -> dict | None:
            period = {"from": "2031-03-10", "to": "2031-04-01", "currency": "EUR", "channel": "website"}
            body = as_json(await retention.client.get("/economics", params=period))
            return body if body["terminations"]["count"] >= 1 else None

        economics = await eventually(figures, timeout=30)
        # Other tests share the broker and channel: ours is one termination with its 1000 of MRR.
        assert economics["churn_split"]["terminated"] >= 1 and economics["terminations"]["by_reason"]["fired"] >= 1
        assert Decimal(economics["terminations"]["mrr"]) >= Decimal("1000")
        assert (
            economics["logo_churn"]["lost"]
            == economics["churn_split"]["voluntary"] + (economics["churn_split"]["involuntary"])
        )

        # `clientflow replay retention` rebuilds the same: the termination, ended, and the figures.
        period = {"from": "2031-03-10", "to": "2031-04-01", "currency": "EUR", "channel": "website"}
        live = as_json(await retention.client.get("/economics", params=period))
        report = await replay(retention_s, database_url=databases["rebuilt"])
        assert not [x for x in report.rejected if lead_id in x]
        engine = create_engine(databases["rebuilt"])
        try:
            uow = UnitOfWorkFactory(engine, producer="retention", clock=ManualClock(clock.now()))
            ctx = Context(settings=retention_s, metrics=RetentionMetrics(CollectorRegistry(), uow.sessions))
            async with uow() as tx:
                figures_again = await retention_economics.economics(
                    tx,
                    ctx,
                    start=datetime(2031, 3, 10, tzinfo=UTC),
                    end=datetime(2031, 4, 1, tzinfo=UTC),
                    channel="website",
                    currency="EUR",
                )
                rebuilt = await retention_terminations.termination_of(tx, uuid.UUID(lead_id))
                assert rebuilt is not None and str(rebuilt.id) == termination["termination_id"]
                assert retention_terminations.status_of(rebuilt, tx.now()) == "ended" and rebuilt.status == "ended"
        finally:
            await engine.dispose()
        snap = retention_economics.Snapshot(0, 0, 0, {}, {}, clock.now())
        replayed = json.loads(economics_out(figures_again, snap).model_dump_json(by_alias=True))
        live_only = ("clients", "active_subscriptions", "paused_subscriptions", "mrr", "revenue", "as_of")
        keep = [k for k in live if k not in live_only]
        assert {k: replayed[k] for k in keep} == {k: live[k] for k in keep}

        # A colleague from the same company writes later: flagged, with a surcharge of 3.
        later = as_json(
            await leads.client.post(
                "/leads",
                json={"name": "Shirin Ghasemi", "email": f"shirin@{domain}", "channel": "website", "language": "fa"},
            )
        )
        assert "terminated_before" in later["red_flags"]
        lead = as_json(await leads.client.get(f"/leads/{later['lead_id']}"))
        (flag,) = [f for f in lead["red_flags"] if f["name"] == "terminated_before"]
        assert lead_id in flag["evidence"] and "fired" in flag["evidence"] and "2031-03-03" in flag["evidence"]
        assert Decimal(lead["surcharge"]) == 3
        estimate = as_json(
            await leads.client.post(
                f"/leads/{later['lead_id']}/deals",
                json={
                    "title": "Website",
                    "kind": "project",
                    "currency": "EUR",
                    "lines": [{"description": "Design", "amount": "600"}, {"description": "Build", "amount": "400"}],
                },
            )
        )
        assert Decimal(estimate["total"]) == Decimal("3000")
        assert estimate["lines"][-1]["description"] == "Returning-client surcharge (x3)"
        assert Decimal(estimate["lines"][-1]["amount"]) == Decimal("2000")

        # A lead who never became a client has no relationship to end.
        async def known_to_retention() -> bool:
            return (await retention.client.get(f"/clients/{later['lead_id']}")).status_code == 200

        await eventually(known_to_retention, timeout=30)
        never = await retention.client.post(f"/clients/{later['lead_id']}/termination", json={"reason": "other"})
        assert never.status_code == 409 and "never became a client" in never.text


async def test_no_notice_ends_a_project_at_once_with_the_work_done_to_date_invoiced(
    kafka_bootstrap: str, database_url: str
) -> None:
    clock = ManualClock(START)
    lead_id = uuid.uuid4()
    settings, app = billing_test_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        won = deal_won(lead_id, total="3000", share="0.30")
        await send(kafka_bootstrap, won)
        (deposit,) = await invoices_of(svc, lead_id)
        as_json(await pay(svc, deposit["invoice_id"], "900"))
        milestone = await svc.client.post(
            f"/deals/{won.data['deal_id']}/invoices", json={"kind": "milestone", "amount": "500"}
        )
        assert milestone.status_code == 201, milestone.text
        terminated = ev.ClientTerminated(
            termination_id=uuid.uuid4(), reason="scope_abuse", notice_days=0, effective_at=START
        )
        envelope = make_event("client.terminated", terminated, producer="retention", occurred_at=START, lead_id=lead_id)
        await send(kafka_bootstrap, envelope, envelope)  # a redelivery changes nothing

        def finals() -> list[ev.Envelope]:
            return [e for e in reader.events("invoice.issued", lead_id=lead_id) if e.data["kind"] == "final"]

        async def issued() -> list[ev.Envelope]:
            await reader.wait_for("invoice.issued", lead_id=lead_id, count=3)
            return finals()

        (final,) = await eventually(issued, timeout=30)
        # By hand: 3000 - 900 deposit - 500 milestone = 1600 of work done never invoiced.
        assert Decimal(final.data["amount"]) == Decimal("1600")
        (line,) = final.data["lines"]
        assert line["description"] == "Work done to date: Website relaunch"
        assert Decimal(line["amount"]) == Decimal("1600")
        assert final.data["deal_id"] == won.data["deal_id"]  # one project: invoiced on it
        # Nothing is left to invoice on the project afterwards.
        more = await svc.client.post(f"/deals/{won.data['deal_id']}/invoices", json={"kind": "final"})
        assert more.status_code == 409 and "fully invoiced" in more.text
        assert len(finals()) == 1

"""Retention's record, economics, churn risk, loyalty, referrals, tier review and replay,
against the real broker and database, with business dates chosen by the test."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.retention import economics, views
from services.retention.app import create_app
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.replay import replay
from services.retention.settings import Settings
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import create_engine
from shared.events import make_event
from shared.uow import UnitOfWorkFactory
from tests.conftest import fresh_database
from tests.support import TopicReader, as_json, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def two_databases(_postgres_server, tmp_path):  # made before the event loop runs
    live, rebuilt = (
        fresh_database(_postgres_server, tmp_path, "live"),
        fresh_database(_postgres_server, tmp_path, "rebuilt"),
    )
    yield next(live), next(rebuilt)
    for gen in (live, rebuilt):
        for _ in gen:
            pass


NOW = datetime(2026, 4, 1, 9, tzinfo=UTC)
PERIOD = {"from": "2026-01-01", "to": "2026-04-01", "currency": "EUR"}


class ManualClock(SimulatedClock):
    simulated = False  # moved by the test alone, never by the shared clock topic


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 10, tzinfo=UTC)


def e(event_type: str, payload: ev.Payload, lead_id: uuid.UUID | None, when: datetime, producer_name: str = "billing"):
    return make_event(event_type, payload, producer=producer_name, occurred_at=when, lead_id=lead_id)


def captured(lead_id, channel, when, email, referred_by=None):
    p = ev.LeadCaptured(name="X", email=email, channel=channel, fit_score=60, referred_by=referred_by)
    return e("lead.captured", p, lead_id, when, "leads")


def won(lead_id, when, total="6000", rate="100"):
    p = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Retainer",
        kind="retainer",
        currency="EUR",
        total=Decimal(total),
        hourly_rate=Decimal(rate),
        signed_by="X",
        signed_at=when,
        deposit_share=Decimal("0.3"),
    )
    return e("deal.won", p, lead_id, when, "leads")


def cleared(lead_id, when):
    p = ev.DepositCleared(
        deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(300), currency="EUR", cleared_at=when
    )
    return e("deposit.cleared", p, lead_id, when)


def started(lead_id, sub, fee, when):
    p = ev.SubscriptionStarted(
        subscription_id=sub,
        deal_id=uuid.uuid4(),
        monthly_fee=Decimal(fee),
        currency="EUR",
        included_hours=Decimal(10),
        started_at=when,
    )
    return e("subscription.started", p, lead_id, when)


def paid(lead_id, amount, when, days_late=0, invoice_id=None):
    p = ev.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        invoice_id=invoice_id or uuid.uuid4(),
        amount=Decimal(amount),
        currency="EUR",
        method="card",
        paid_at=when,
        days_late=days_late,
        invoice_paid=True,
    )
    return e("payment.succeeded", p, lead_id, when)


async def send(bootstrap, *envelopes) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def client(svc, lead_id, check=lambda body: True) -> dict:
    async def get() -> dict:
        response = await svc.client.get(f"/clients/{lead_id}")
        if response.status_code != 200:
            return {}
        body = response.json()
        return body if check(body) else {}

    return await eventually(get, timeout=30)


async def published(reader: TopicReader, event_type: str, lead_id, matches) -> list:
    """Wait until an event of ``event_type`` about ``lead_id`` whose data ``matches`` is on its
    topic (a relay may publish an event twice: counting events is not enough); all seen."""
    count = 1
    while True:
        found = await reader.wait_for(event_type, lead_id=lead_id, count=count, timeout=30)
        if any(matches(x.data) for x in found):
            return found
        count = len(found) + 1


async def test_record_economics_risk_loyalty_referrals_review_and_replay(
    kafka_bootstrap: str, two_databases: tuple[str, str]
) -> None:
    clock = ManualClock(NOW)
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=two_databases[0])
    tag = uuid.uuid4().hex[:8]
    ads, other = f"ads-{tag}", f"seo-{tag}"
    a, b, d, e_, r, p1 = (uuid.uuid4() for _ in range(6))
    sub_a, sub_b, sub_d, sub_e = (uuid.uuid4() for _ in range(4))
    invoice_a, invoice_e = uuid.uuid4(), uuid.uuid4()
    async with (
        run_service(create_app(settings, clock=clock), settings.port) as svc,
        TopicReader(kafka_bootstrap, topics.RETENTION, topics.CANCELLATIONS) as reader,
    ):
        spend = ev.ChannelSpendRecorded(
            channel=ads,
            period_start=date(2026, 1, 1),
            period_end=date(2026, 1, 31),
            amount=Decimal(3000),
            currency="EUR",
        )
        await send(
            kafka_bootstrap,
            e("channel.spend_recorded", spend, None, at(2026, 2, 1), "leads"),
            # A: a retainer since December; pays on time; an out-of-scope ask slipped through unbilled
            captured(a, ads, at(2025, 11, 1), f"a-{tag}@example.com"),
            e(
                "lead.qualified",
                ev.LeadQualified(budget=True, authority=True, need=True, timeline=True),
                a,
                at(2025, 11, 2),
                "leads",
            ),
            won(a, at(2025, 11, 20)),
            cleared(a, at(2025, 12, 1)),
            started(a, sub_a, "1000", at(2025, 12, 1)),
            paid(a, "1000", at(2026, 3, 1), invoice_id=invoice_a),
            e(
                "deal.change_requested",
                ev.DealChangeRequested(
                    deal_id=uuid.uuid4(),
                    request_id=uuid.uuid4(),
                    description="extra page",
                    in_scope=False,
                    hours=Decimal(3),
                    amount=Decimal(0),
                    currency="EUR",
                ),
                a,
                at(2026, 2, 5),
                "leads",
            ),
            e("email.opened", ev.EmailOpened(message_id=uuid.uuid4()), a, NOW - timedelta(days=2), "nurture"),
            e(
                "email.clicked",
                ev.EmailClicked(message_id=uuid.uuid4(), url="https://x"),
                a,
                NOW - timedelta(days=2),
                "nurture",
            ),
            e("takeover.started", ev.TakeoverStarted(by="founder"), a, NOW - timedelta(days=1), "nurture"),
            # a price increase in 19 days: a churn risk now, an expansion when it takes effect
            e(
                "price.change_scheduled",
                ev.PriceChangeScheduled(
                    subscription_id=sub_a,
                    old_price=Decimal(1000),
                    new_price=Decimal(1100),
                    currency="EUR",
                    effective_at=at(2026, 4, 20),
                ),
                a,
                at(2026, 3, 20),
            ),
            # B: left on 20 February, after a complaint, a failed payment and an overdue invoice
            captured(b, ads, at(2025, 11, 2), f"b-{tag}@example.com"),
            cleared(b, at(2025, 12, 15)),
            started(b, sub_b, "2000", at(2025, 12, 15)),
            e(
                "payment.failed",
                ev.PaymentFailed(invoice_id=uuid.uuid4(), amount=Decimal(2000), currency="EUR", method="card"),
                b,
                at(2026, 2, 1),
            ),
            e(
                "invoice.overdue",
                ev.InvoiceOverdue(
                    invoice_id=uuid.uuid4(),
                    amount_due=Decimal(2000),
                    currency="EUR",
                    due_at=at(2026, 2, 1),
                    days_overdue=10,
                ),
                b,
                at(2026, 2, 11),
            ),
            e(
                "feedback.received",
                ev.FeedbackReceived(survey="nps", score=3, complaint=True),
                b,
                at(2026, 2, 12),
                "nurture",
            ),
            e("lead.unsubscribed", ev.LeadUnsubscribed(), b, at(2026, 2, 13), "nurture"),
            e(
                "subscription.cancelled",
                ev.SubscriptionCancelled(subscription_id=sub_b, effective_at=at(2026, 2, 20)),
                b,
                at(2026, 2, 20),
            ),
            # D: the one new client of the period
            captured(d, ads, at(2026, 1, 5), f"d-{tag}@example.com"),
            e(
                "lead.qualified",
                ev.LeadQualified(budget=True, authority=True, need=True, timeline=True),
                d,
                at(2026, 1, 6),
                "leads",
            ),
            e(
                "deal.proposed",
                ev.DealProposed(deal_id=uuid.uuid4(), title="R", kind="retainer", currency="EUR", total=Decimal(4500)),
                d,
                at(2026, 1, 7),
                "leads",
            ),
            won(d, at(2026, 1, 8), total="4500"),
            cleared(d, at(2026, 1, 10)),
            started(d, sub_d, "1500", at(2026, 1, 10)),
            # E: paused on 10 February: a client, not MRR, not churn
            captured(e_, ads, at(2025, 12, 1), f"e-{tag}@example.com"),
            cleared(e_, at(2025, 12, 20)),
            started(e_, sub_e, "500", at(2025, 12, 20)),
            e(
                "subscription.paused",
                ev.SubscriptionPaused(subscription_id=sub_e, paused_fee=Decimal(100), currency="EUR"),
                e_,
                at(2026, 2, 10),
            ),
            # D works 3 of its 10 hours; E is refunded a payment
            e(
                "hours.usage_reported",
                ev.HoursUsageReported(
                    subscription_id=sub_d,
                    period_start=at(2026, 3, 1),
                    period_end=at(2026, 4, 1),
                    included_hours=Decimal(10),
                    used_hours=Decimal(3),
                    overage_hours=Decimal(0),
                    overage_amount=Decimal(0),
                    currency="EUR",
                ),
                d,
                at(2026, 3, 31),
            ),
            paid(e_, "500", at(2026, 3, 25), invoice_id=invoice_e),
            e(
                "credit_note.issued",
                ev.CreditNoteIssued(
                    credit_note_id=uuid.uuid4(),
                    number="CN-1",
                    invoice_id=invoice_e,
                    amount=Decimal(500),
                    currency="EUR",
                    reduces_due=Decimal(0),
                    refunded=Decimal(500),
                    credited=Decimal(0),
                    reason="refund",
                    issued_at=at(2026, 3, 28),
                ),
                e_,
                at(2026, 3, 28),
            ),
            # a lead of another channel that never converts
            captured(p1, other, at(2026, 3, 1), f"p-{tag}@example.com"),
        )
        # Events on different topics arrive in no set order: wait until all of A's have applied.
        body = await client(
            svc,
            a,
            lambda x: (
                x["churn_risk"]["open"]
                and x["subscription_status"] == "active"
                and x["takeover_active"]
                and x["counts"]["out_of_scope_requests"] == 1
                and x["factors"]["engagement"]["evidence"].get("clicks") == 1
            ),
        )
        assert body["churn_risk"]["reasons"] == ["price_increase_ahead"]
        assert body["takeover_active"] and body["counts"]["out_of_scope_requests"] == 1
        assert body["factors"]["engagement"]["evidence"] == {"opens": 1, "clicks": 1, "unsubscribed": 0}
        assert [x["type"] for x in body["factors"]["scope"]["events"]] == ["deal.change_requested"]
        assert body["trend"]["direction"] in ("flat", "up", "down")
        body = await client(
            svc, e_, lambda x: x["subscription_status"] == "paused" and x["counts"]["payments_on_time"] == 1
        )
        await client(svc, e_, lambda x: x["revenue"] == [{"amount": "0", "currency": "EUR"}])
        await client(svc, b, lambda x: x["subscription_status"] == "cancelled" and x["counts"]["complaints"] == 1)
        body = await client(svc, d, lambda x: x["churn_risk"]["open"])
        assert body["churn_risk"]["reasons"] == ["hours_underused"]
        await client(svc, p1)

        # the period's economics, by hand: at the start A, B, E (MRR 1000 + 2000 + 500 = 3500)
        live = as_json(await svc.client.get("/economics", params={**PERIOD, "channel": ads}))
        assert (live["leads"], live["new_clients"], live["spend"]) == (1, 1, {"amount": "3000.00", "currency": "EUR"})
        assert live["logo_churn"] | {"reason": None} == {
            "rate": "0.3333",
            "monthly_rate": "0.1111",
            "lost": 1,
            "clients_at_start": 3,
            "reason": None,
        }
        assert (live["mrr_start"], live["mrr_end"]) == ("3500", "2500")
        assert live["mrr_movements"] == {
            "new": "1500",
            "expansion": "0",
            "contraction": "0",
            "churn": "2000",
            "pause": "500",
            "resume": "0",
        }
        # NRR = GRR = (3500 - 2000) / 3500; ARPA 2500 / 2; CAC 3000 / 1; LTV 625 / 0.1111
        assert (live["nrr"], live["grr"], live["revenue_churn"]) == ("0.4286", "0.4286", "0.5714")
        assert (live["arpa"], live["cac"], live["ltv"], live["payback_months"]) == (
            "1250.00",
            "3000.00",
            "5625.56",
            "4.80",
        )
        assert live["ltv_cac"] == "1.88"
        assert live["leaked_revenue"] == {"amount": "300.00", "currency": "EUR"}
        assert live["cohorts"] == [{"cohort": "2026-01", "clients": 1, "retention": ["1.0000", "1.0000", "1.0000"]}]
        empty = as_json(await svc.client.get("/economics", params={**PERIOD, "channel": f"none-{tag}"}))
        assert empty["cac"] is None and "no lead or client" in empty["reasons"]["period"]
        inverted = await svc.client.get("/economics", params={"from": "2026-04-01", "to": "2026-01-01"})
        assert inverted.status_code == 422 and "inverted" in inverted.text

        # churn risk once per episode, whatever else happens
        raised = await reader.wait_for("churn_risk.raised", lead_id=a)
        assert ev.ChurnRiskRaised.model_validate(raised[0].data).reasons == ["price_increase_ahead"]

        # referrals: an existing client cannot be referred; a new person can, once
        refused = await svc.client.post(
            "/referrals", json={"lead_id": str(a), "name": "D", "email": f"d-{tag}@example.com"}
        )
        assert refused.status_code == 409 and "already a client" in refused.text
        made = as_json(
            await svc.client.post(
                "/referrals", json={"lead_id": str(a), "name": "Rae", "email": f"r-{tag}@example.com"}
            )
        )
        again = await svc.client.post(
            "/referrals", json={"lead_id": str(a), "name": "Rae", "email": f"R-{tag}@example.com"}
        )
        assert again.status_code == 409
        unknown = await svc.client.post(
            "/referrals", json={"lead_id": str(uuid.uuid4()), "name": "Q", "email": "q@example.com"}
        )
        assert unknown.status_code == 404
        (referral,) = await reader.wait_for("referral.made", lead_id=a)
        assert ev.ReferralMade.model_validate(referral.data).referral_id == uuid.UUID(made["referral_id"])
        # leads creates the referred lead (channel referral, referred_by A); it becomes a client
        await send(
            kafka_bootstrap, captured(r, "referral", NOW, f"r-{tag}@example.com", referred_by=a), cleared(r, NOW)
        )
        body = await client(svc, a, lambda x: x["referrals_converted"] == 1)
        # 500 for the referral (plus 100 if a pass already awarded the paid invoice's points)
        assert body["referrals_made"] == 1 and body["loyalty_points"] in (500, 600)

        # loyalty: A's paid invoice (1 March) is past its 14-day refund window at the next pass
        clock.advance_to(NOW + timedelta(hours=1))
        body = await client(svc, a, lambda x: x["loyalty_points"] == 600)
        await published(reader, "loyalty.points_awarded", a, lambda d: d["invoice_id"] == str(invoice_a))
        points = await published(reader, "loyalty.points_awarded", a, lambda d: d["invoice_id"] is None)
        awarded = [ev.LoyaltyPointsAwarded.model_validate(p.data) for p in points]
        assert {(p.points, p.invoice_id) for p in awarded} == {(500, None), (100, invoice_a)}
        assert max(p.balance for p in awarded) == 600

        # the tier review: B (complaint, failure, late) and the rest classified, published, listed
        review = as_json(await svc.client.post("/reviews"))
        latest = as_json(await svc.client.get("/reviews/latest"))
        assert latest["review_id"] == review["review_id"] and sum(latest["tiers"].values()) >= 5
        # one out-of-scope ask is friction, not fire (the scheduled pass may have classified A first)
        assert (await client(svc, a))["tier"] == "tolerable"
        await published(reader, "client.tier_changed", a, lambda d: d["to_tier"] == "tolerable")

        metrics = (await svc.client.get("/metrics")).text
        assert "clientflow_retention_economics{" in metrics and "clientflow_retention_churn_risks_total" in metrics

        # replay: the same figures from the topics' history in a fresh database
        live = as_json(await svc.client.get("/economics", params={**PERIOD, "channel": ads}))
        rebuilt_url = two_databases[1]
        report = await replay(settings, database_url=rebuilt_url)
        assert report.applied > 30 and not [x for x in report.rejected if tag in x]
        engine = create_engine(rebuilt_url)
        try:
            uow = UnitOfWorkFactory(engine, producer="retention", clock=ManualClock(clock.now()))
            ctx = Context(settings=settings, metrics=RetentionMetrics(CollectorRegistry(), uow.sessions))
            async with uow() as tx:
                rebuilt = await economics.economics(
                    tx,
                    ctx,
                    start=at(2026, 1, 1).replace(hour=0),
                    end=at(2026, 4, 1).replace(hour=0),
                    channel=ads,
                    currency="EUR",
                )
                view = await views.client_view(tx, ctx, a)
        finally:
            await engine.dispose()
        from services.retention.api import economics_out

        snap = economics.Snapshot(0, 0, 0, {}, {}, clock.now())
        replayed = json.loads(economics_out(rebuilt, snap).model_dump_json(by_alias=True))
        keep = [
            k
            for k in live
            if k not in ("clients", "active_subscriptions", "paused_subscriptions", "mrr", "revenue", "as_of")
        ]
        assert {k: replayed[k] for k in keep} == {k: live[k] for k in keep}
        if os.environ.get("RETENTION_EVIDENCE"):
            write_evidence(Path(os.environ["RETENTION_EVIDENCE"]), live, replayed, keep, report, settings.database_url)
        assert (view.client.tier, view.client.loyalty_points, view.client.referrals_converted) == ("tolerable", 600, 1)


def write_evidence(path: Path, live: dict, replayed: dict, keep: list[str], report, database_url: str) -> None:
    """The closing note's evidence: the live report, as JSON and as a table, and the replay's."""

    def table(body: dict) -> str:
        rows = [
            ("leads", body["leads"]),
            ("new clients", body["new_clients"]),
            ("spend", f"{body['spend']['amount']} {body['spend']['currency']}"),
            ("CAC", body["cac"]),
            ("ARPA", body["arpa"]),
            ("LTV", body["ltv"]),
            ("LTV:CAC", body["ltv_cac"]),
            ("payback months", body["payback_months"]),
            ("logo churn", body["logo_churn"]["rate"]),
            ("monthly logo churn", body["logo_churn"]["monthly_rate"]),
            ("revenue churn", body["revenue_churn"]),
            ("MRR start / end", f"{body['mrr_start']} / {body['mrr_end']}"),
            *((f"MRR {k}", v) for k, v in body["mrr_movements"].items()),
            ("NRR", body["nrr"]),
            ("GRR", body["grr"]),
            ("fire share", body["fire_share"]),
            ("leaked revenue", body["leaked_revenue"]["amount"]),
            *((f"funnel {s['stage']}", f"{s['count']} ({s['from_previous']} of previous)") for s in body["funnel"]),
            *((f"cohort {c['cohort']} ({c['clients']})", ", ".join(map(str, c["retention"]))) for c in body["cohorts"]),
        ]
        return "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])

    backend = database_url.split(":", 1)[0]
    path.write_text(
        f"# Retention economics: a real run ({backend}, real broker)\n\n"
        f"GET /economics?from=2026-01-01&to=2026-04-01&currency=EUR&channel={live['channel']}\n\n"
        f"{table(live)}\n\n```json\n{json.dumps(live, indent=2)}\n```\n\n"
        f"## Replay (`clientflow replay retention` into a fresh database)\n\n"
        f"read {report.read} events from {', '.join(report.topics)}; applied {report.applied}, skipped {report.skipped}\n\n"
        f"{table(replayed)}\n\nSame figures: {all(replayed[k] == live[k] for k in keep)}\n"
    )

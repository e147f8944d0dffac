"""The figures the agency's notes judge it by, on a real broker and database: ROI and lead cost
per channel, a retention year, client lifetime, the leak, included hours against none, new
against old clients; exchange rates set as data (the economics in one currency, a missing rate
named); and the nudge for included hours left unused two months running (retention announces it,
nurture mails the client in their language and gives the account owner a task)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.nurture.app import create_app as nurture_app
from services.retention.app import create_app as retention_app
from services.retention.settings import Settings as RetentionSettings
from shared import events as ev
from shared import topics
from tests.integration.test_nurture_sequences import T0
from tests.integration.test_nurture_sequences import ManualClock as NurtureClock
from tests.integration.test_nurture_sequences import settings_for as nurture_settings
from tests.integration.test_nurture_tasks import happen, tasks_of
from tests.integration.test_retention_lifecycle import ManualClock, client, e, send
from tests.support import TopicReader, as_json, event, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


def d(y: int, m: int, day: int = 1) -> datetime:
    return datetime(y, m, day, 10, tzinfo=UTC)


def captured(lead_id: uuid.UUID, channel: str, when: datetime, tag: str) -> ev.Envelope:
    p = ev.LeadCaptured(name="X", email=f"{lead_id.hex[:10]}-{tag}@example.com", channel=channel, fit_score=60)
    return e("lead.captured", p, lead_id, when, "leads")


def cleared(lead_id: uuid.UUID, when: datetime) -> ev.Envelope:
    p = ev.DepositCleared(
        deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(1), currency="EUR", cleared_at=when
    )
    return e("deposit.cleared", p, lead_id, when)


def started(lead_id: uuid.UUID, sub: uuid.UUID, fee: str, when: datetime, hours: str | None, currency: str = "EUR"):
    p = ev.SubscriptionStarted(
        subscription_id=sub,
        deal_id=uuid.uuid4(),
        monthly_fee=Decimal(fee),
        currency=currency,
        included_hours=Decimal(hours) if hours else None,
        started_at=when,
    )
    return e("subscription.started", p, lead_id, when)


def cancelled(lead_id: uuid.UUID, sub: uuid.UUID, fee: str, when: datetime) -> ev.Envelope:
    p = ev.SubscriptionCancelled(
        subscription_id=sub, reason="budget_cut", effective_at=when, monthly_fee=Decimal(fee), currency="EUR"
    )
    return e("subscription.cancelled", p, lead_id, when)


def paid(lead_id: uuid.UUID, amount: str, when: datetime, currency: str = "EUR") -> ev.Envelope:
    p = ev.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        invoice_id=uuid.uuid4(),
        amount=Decimal(amount),
        currency=currency,
        method="card",
        paid_at=when,
        invoice_paid=True,
    )
    return e("payment.succeeded", p, lead_id, when)


def feedback(lead_id: uuid.UUID, score: int, when: datetime) -> ev.Envelope:
    p = ev.FeedbackReceived(survey="check-in", score=score, complaint=score <= 3)
    return e("feedback.received", p, lead_id, when, "nurture")


def usage(lead_id: uuid.UUID, sub: uuid.UUID, used: str, month: datetime) -> ev.Envelope:
    p = ev.HoursUsageReported(
        subscription_id=sub,
        period_start=month,
        period_end=month + timedelta(days=30),
        included_hours=Decimal(10),
        used_hours=Decimal(used),
        overage_hours=Decimal(0),
        overage_amount=Decimal(0),
        currency="EUR",
    )
    return e("hours.usage_reported", p, lead_id, month + timedelta(days=30))


async def test_the_agencys_figures_rates_and_a_missing_rate(kafka_bootstrap: str, database_url: str) -> None:
    clock = ManualClock(d(2027, 1, 1))
    settings = service_settings(RetentionSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    channel = "tender"  # channels are a fixed list: a fresh database per test on SQLite; on the shared
    tag = uuid.uuid4().hex[:8]  # PostgreSQL database the spend below is this test's own by its tag period
    a, b, c, u = (uuid.uuid4() for _ in range(4))
    sa, sb, sc, su = (uuid.uuid4() for _ in range(4))
    spend = ev.ChannelSpendRecorded(
        channel=channel,
        period_start=date(2025, 1, 1),
        period_end=date(2025, 1, 31),
        amount=Decimal(2000),
        currency="EUR",
    )
    async with run_service(retention_app(settings, clock=clock), settings.port) as svc:
        await send(
            kafka_bootstrap,
            e("channel.spend_recorded", spend, None, d(2025, 2, 1), "leads"),
            # a: joined Jan 2025 with 10 included hours, pays 1000 a month all along (two years)
            captured(a, channel, d(2025, 1, 2), tag),
            cleared(a, d(2025, 1, 10)),
            started(a, sa, "1000", d(2025, 1, 10), "10"),
            *(paid(a, "1000", d(2025, m, 15)) for m in range(1, 13)),
            *(paid(a, "1300", d(2026, m, 15)) for m in range(1, 13)),
            # b: joined Jan 2025 without hours, left unhappy in April 2025 (feedback 2 in March)
            captured(b, channel, d(2025, 1, 3), tag),
            cleared(b, d(2025, 1, 12)),
            started(b, sb, "500", d(2025, 1, 12), None),
            paid(b, "500", d(2025, 2, 1)),
            feedback(b, 2, d(2025, 3, 20)),
            cancelled(b, sb, "500", d(2025, 4, 12)),
            # c: a USD client from June 2026
            captured(c, channel, d(2026, 6, 1), tag),
            cleared(c, d(2026, 6, 2)),
            started(c, sc, "1000", d(2026, 6, 2), None, currency="USD"),
            paid(c, "1000", d(2026, 6, 15), currency="USD"),
            # u: under half of 10 included hours two months running
            captured(u, channel, d(2026, 9, 1), tag),
            cleared(u, d(2026, 9, 2)),
            started(u, su, "800", d(2026, 9, 2), "10"),
        )
        await client(svc, c, lambda body: bool(body.get("mrr")))
        async with TopicReader(kafka_bootstrap, topics.RETENTION) as bus:
            await send(kafka_bootstrap, usage(u, su, "4", d(2026, 10, 1)), usage(u, su, "3", d(2026, 11, 1)))
            (nudge,) = await bus.wait_for("client.hours_underused", lead_id=u, timeout=30)
            await send(kafka_bootstrap, usage(u, su, "2", d(2026, 12, 1)))  # still under: no second nudge
            await client(svc, u, lambda body: True)
        assert (nudge.data["months"], nudge.data["used_hours"], nudge.data["included_hours"]) == (2, "3", "10")

        query = {"from": "2025-01-01", "to": "2027-01-01", "currency": "EUR", "channel": channel}

        async def settled() -> dict | None:
            body = as_json(await svc.client.get("/economics", params=query))
            return body if body["yearly_revenue_retention"]["revenue_this_year"] != "0.00" else None

        both = await eventually(settled, timeout=30)
        # ROI: January 2025's new clients a and b paid 12 000 + 500 in their first year against 2000 of spend.
        tender = both["channels"][channel]
        assert (tender["spend"], tender["new_clients"]) == ("2000.00", 4)
        # first year: a 12 x 1000 + 1300 x (payments before 10 Jan 2026: none) = 12000; b 500; u nothing; c is USD
        assert tender["first_year_revenue"] == "12500.00" and Decimal(tender["roi"]) == Decimal("5.25")
        assert tender["cost_per_lead"] == "500.00"  # 2000 over 4 leads
        # A retention year as of 2027-01-01: a and b were clients a year before. a paid 15 600 in
        # 2026; in the year before, a paid 12 000 in its 355 days 14 hours as a client and b 500 in
        # 353 days 14 hours, annualised: 12000 x 365/355.583 + 500 x 365/353.583 = 12 833.93.
        year = both["yearly_revenue_retention"]
        assert (year["revenue_this_year"], year["revenue_year_before"], Decimal(year["ratio"])) == (
            "15600.00",
            "12833.93",
            Decimal("1.2155"),
        )
        # Of those, a stayed (b left): 15 600 / (12 000 x 365/355.583 = 12 317.78) = 1.2665.
        assert (Decimal(year["stayed_ratio"]), year["stayed_clients"]) == (Decimal("1.2665"), 1)
        # One of four has left: the median lifetime is still ahead (and says so).
        assert both["median_lifetime_months"] is None and both["lifetime"]["median_of_those_who_left"] == "3.00"
        assert "fewer than half of the clients have left (1 of 4)" in both["reasons"]["median_lifetime_months"]
        assert both["leak"]["unhappy"] == 1 and both["leak"]["goal"] == "0.05"
        hours = both["included_hours"]
        assert (hours["with_hours"]["clients"], hours["without_hours"]["clients"]) == (2, 2)  # a, u; b, c
        assert both["new_against_old"][0]["month"] == "2025-01"

        # The USD client is left out of EUR figures; converting needs a rate, and says which.
        converted = {**query, "convert": "true"}
        missing = as_json(await svc.client.get("/economics", params=converted))
        assert "USD->EUR on 2026-06-02" in missing["reasons"]["exchange_rates"]
        bad = await svc.client.put(
            "/exchange-rates",
            json={"rates": [{"currency": "USD", "quote": "USD", "valid_from": "2026-01-01T00:00:00Z", "rate": "1"}]},
        )
        assert bad.status_code == 422 and "rates[0].quote" in bad.text
        negative = await svc.client.put(
            "/exchange-rates",
            json={"rates": [{"currency": "USD", "quote": "EUR", "valid_from": "2026-01-01T00:00:00Z", "rate": "-1"}]},
        )
        assert negative.status_code == 422 and "rate" in negative.text
        set_ = await svc.client.put(
            "/exchange-rates",
            json={"rates": [{"currency": "USD", "quote": "EUR", "valid_from": "2026-01-01T00:00:00Z", "rate": "0.9"}]},
        )
        assert set_.status_code == 200, set_.text
        assert [(x["currency"], x["quote"], x["rate"]) for x in as_json(await svc.client.get("/exchange-rates"))] == [
            ("USD", "EUR", "0.9")
        ]
        full = as_json(await svc.client.get("/economics", params=converted))
        assert "exchange_rates" not in full["reasons"] and full["converted"] is True
        # c's 1000 USD paid in June 2026 is 900 EUR in this year's revenue of the channel's clients.
        eur_only = Decimal(both["channels"][channel]["first_year_revenue"])
        assert Decimal(full["channels"][channel]["first_year_revenue"]) == eur_only + Decimal(900)


async def test_a_nudge_for_unused_hours_mails_the_client_and_tasks_the_account_owner(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = nurture_settings(kafka_bootstrap, database_url, tmp_path)
    lead_id, success = uuid.uuid4(), uuid.uuid4()
    person = ev.LeadCaptured(
        name="Rahim Uddin",
        email=f"{lead_id.hex[:10]}@example.com.bd",
        language="bn",
        timezone="Asia/Dhaka",
        channel="website",
        consent_marketing=False,  # a nudge about their own plan is no marketing
        fit_score=70,
    )
    nudge = ev.ClientHoursUnderused(months=2, used_hours=Decimal(3), included_hours=Decimal(10), share=Decimal("0.5"))
    async with run_service(nurture_app(settings, clock=NurtureClock(T0)), settings.port) as svc:
        await happen(
            svc,
            kafka_bootstrap,
            event("lead.captured", person, lead_id=lead_id, producer_name="leads"),
            event(
                "lead.assigned",
                ev.LeadAssigned(owner_id=success, role="account", reason="won"),
                lead_id=lead_id,
                producer_name="leads",
            ),
        )
        await happen(
            svc, kafka_bootstrap, event("client.hours_underused", nudge, lead_id=lead_id, producer_name="retention")
        )

        async def mailed() -> list[dict]:
            return [
                m for m in as_json(await svc.client.get(f"/leads/{lead_id}/messages")) if m["sequence"] == "hours_nudge"
            ]

        (message,) = await eventually(mailed, timeout=30)
        assert message["language"] == "bn" and "ঘণ্টা" in message["subject"]
        (task,) = [t for t in await tasks_of(svc, lead_id=str(lead_id)) if t["kind"] == "hours_underused"]
        assert task["owner_id"] == str(success)
        assert datetime.fromisoformat(task["due_at"]) == T0 + timedelta(hours=48)

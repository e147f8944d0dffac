"""Save offers that bill, against a real broker and database: a discount or a downgrade a client
took instead of leaving changes the next invoices (a discount line; the smaller plan and its
hours), is announced as ``subscription.price_changed`` and ends by itself with the full fee back;
retention counts the contraction and the expansion back in NRR and GRR; resuming a pause mid-period
is prorated; a tailored offer over 100% or for no months is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.retention.app import create_app as retention_app
from services.retention.settings import Settings as RetentionSettings
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from tests.integration.test_billing_retainers import billing_app, start_retainer
from tests.integration.test_billing_service import invoices_of, pay, send
from tests.integration.test_retention_lifecycle import ManualClock, captured, client, e, started
from tests.support import TopicReader, as_json, event, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


def saved(lead_id: uuid.UUID, sub: dict, offer: ev.SaveOffer) -> ev.Envelope:
    return event(
        "cancellation.saved",
        ev.CancellationSaved(
            cancellation_id=uuid.uuid4(), subscription_id=uuid.UUID(sub["subscription_id"]), offer=offer
        ),
        lead_id=lead_id,
    )


async def nth_invoice(svc, lead_id: uuid.UUID, n: int) -> dict:
    async def check() -> dict | None:
        items = as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))
        return items[n] if len(items) > n else None

    return await eventually(check, timeout=30)


async def test_a_discount_bills_as_a_discount_line_for_its_months_then_the_full_fee_returns(
    kafka_bootstrap: str, database_url: str
) -> None:
    clock = SimulatedClock(datetime(2031, 3, 1, 8, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        _, sub = await start_retainer(svc, kafka_bootstrap, lead_id, fee="1000")
        _, march = await invoices_of(svc, lead_id, count=2)
        as_json(await pay(svc, march["invoice_id"], march["amount_due"]))
        offer = ev.SaveOffer(
            kind="discount", fee=Decimal("800"), discount_percent=Decimal(20), months=2, currency="EUR"
        )
        taken = saved(lead_id, sub, offer)
        await send(kafka_bootstrap, taken, taken)  # redelivered: one change

        (changed,) = await reader.wait_for("subscription.price_changed", lead_id=lead_id)
        change = ev.SubscriptionPriceChanged.model_validate(changed.data)
        assert (change.reason, change.old_fee, change.new_fee, change.discount_percent) == (
            "discount",
            Decimal("1000.00"),
            Decimal("800.00"),
            Decimal(20),
        )
        # From the next period (March is billed in advance already) for two periods.
        assert change.effective_at == datetime(2031, 4, 1, tzinfo=UTC)
        assert change.until == datetime(2031, 6, 1, tzinfo=UTC)
        (shown,) = as_json(await svc.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        assert shown["offer"]["kind"] == "discount" and shown["offer"]["fee"] == "800.00"
        assert shown["monthly_fee"] == "1000.00"  # the list price stays; the offer is on top

        clock.advance_to(datetime(2031, 4, 1, 1, tzinfo=UTC))
        april = await nth_invoice(svc, lead_id, 2)
        assert april["amount"] == "800.00"
        assert [(line["description"][:16], line["amount"]) for line in april["lines"]] == [
            ("Retainer, 01 Apr", "1000.00"),
            ("Save offer: 20% ", "-200.00"),
        ]
        as_json(await pay(svc, april["invoice_id"], "800.00"))
        clock.advance_to(datetime(2031, 5, 1, 1, tzinfo=UTC))
        may = await nth_invoice(svc, lead_id, 3)
        assert may["amount"] == "800.00"
        as_json(await pay(svc, may["invoice_id"], "800.00"))
        clock.advance_to(datetime(2031, 6, 1, 1, tzinfo=UTC))
        june = await nth_invoice(svc, lead_id, 4)
        assert june["amount"] == "1000.00" and len(june["lines"]) == 1

        ended = await reader.wait_for("subscription.price_changed", lead_id=lead_id, count=2)
        back = ev.SubscriptionPriceChanged.model_validate(ended[-1].data)
        assert (back.reason, back.old_fee, back.new_fee) == ("offer_ended", Decimal("800.00"), Decimal("1000.00"))
        assert back.effective_at == datetime(2031, 6, 1, tzinfo=UTC)
        (after,) = as_json(await svc.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        assert after["offer"] is None
        # An offer no one could bill (150% off) is dead-lettered with its reason; nothing changes.
        bad = ev.SaveOffer(kind="discount", discount_percent=Decimal(150), months=2, currency="EUR")
        await send(kafka_bootstrap, saved(lead_id, sub, bad))
        async with TopicReader(kafka_bootstrap, topics.dlq(topics.CANCELLATIONS)) as dead:
            records = await dead.records(topics.dlq(topics.CANCELLATIONS), count=1)
        mine = [r for r in records if r.key == str(lead_id).encode()]
        assert [dict(r.headers)["x-dlq-reason"] for r in mine] == [b"rejected"]
        assert b"discount_percent" in dict(mine[0].headers)["x-dlq-error"]
        (still,) = as_json(await svc.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        assert still["offer"] is None and still["monthly_fee"] == "1000.00"
    assert len(reader.events("subscription.price_changed", lead_id=lead_id)) == 2


async def test_a_downgrade_bills_the_smaller_plan_and_its_hours(kafka_bootstrap: str, database_url: str) -> None:
    clock = SimulatedClock(datetime(2031, 3, 1, 8, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        _, sub = await start_retainer(svc, kafka_bootstrap, lead_id, fee="1000")  # 10 h included at 120/h
        offer = ev.SaveOffer(kind="downgrade", fee=Decimal("600"), months=1, currency="EUR", included_hours=Decimal(5))
        await send(kafka_bootstrap, saved(lead_id, sub, offer))
        (changed,) = await reader.wait_for("subscription.price_changed", lead_id=lead_id)
        assert (changed.data["reason"], changed.data["new_fee"], changed.data["included_hours"]) == (
            "downgrade",
            "600.00",
            "5",
        )
        clock.advance_to(datetime(2031, 4, 1, 1, tzinfo=UTC))
        april = await nth_invoice(svc, lead_id, 2)
        assert april["amount"] == "600.00"
        assert april["lines"][0]["description"].startswith("Retainer, downgraded plan, 5 hours included, 01 Apr 2031")
        # Seven hours in April: two over the smaller plan's five, billed at 120 on May's invoice.
        logged = await svc.client.post("/time-entries", json={"subscription_id": sub["subscription_id"], "hours": "7"})
        assert logged.status_code in (200, 201), logged.text
        clock.advance_to(datetime(2031, 5, 1, 1, tzinfo=UTC))
        may = await nth_invoice(svc, lead_id, 3)
        assert [(line["description"][:12], line["amount"]) for line in may["lines"]] == [
            ("Retainer, 01", "1000.00"),
            ("Overage 01 A", "240.00"),
        ], may["lines"]
        # The hours per period, as the console shows them: April's smaller plan and its overage.
        periods = as_json(await svc.client.get(f"/subscriptions/{sub['subscription_id']}/hours"))
        april_hours = next(p for p in periods if p["period_start"].startswith("2031-04-01"))
        assert (april_hours["used_hours"], april_hours["included_hours"], april_hours["overage_hours"]) == (
            "7",
            "5",
            "2",
        )
        assert periods[0]["current"] is True and periods[0]["period_start"].startswith("2031-05-01")
        missing = await svc.client.get(f"/subscriptions/{uuid.uuid4()}/hours")
        assert missing.status_code == 404
        usage = await reader.wait_for("hours.usage_reported", lead_id=lead_id, count=2)
        april_usage = next(u for u in usage if u.data["period_start"].startswith("2031-04-01"))
        assert (april_usage.data["included_hours"], april_usage.data["overage_hours"]) == ("5", "2")


async def test_resuming_a_pause_mid_period_bills_the_rest_of_the_period(
    kafka_bootstrap: str, database_url: str
) -> None:
    clock = SimulatedClock(datetime(2031, 3, 1, 8, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        _, sub = await start_retainer(svc, kafka_bootstrap, lead_id, fee="900")
        _, march = await invoices_of(svc, lead_id, count=2)
        as_json(await pay(svc, march["invoice_id"], march["amount_due"]))  # paid: this test is not about dunning
        await send(kafka_bootstrap, saved(lead_id, sub, ev.SaveOffer(kind="pause", fee=Decimal(60), months=3)))
        await reader.wait_for("subscription.paused", lead_id=lead_id)
        clock.advance_to(datetime(2031, 4, 1, 1, tzinfo=UTC))
        april = await nth_invoice(svc, lead_id, 2)
        assert april["amount"] == "60.00"
        as_json(await pay(svc, april["invoice_id"], "60.00"))
        # Resumed on April 21, 00:00: 10 of April's 30 days left at the full fee less the pause fee.
        clock.advance_to(datetime(2031, 4, 21, tzinfo=UTC))
        resumed = as_json(await svc.client.post(f"/subscriptions/{sub['subscription_id']}/resume"))
        assert resumed["status"] == "active"
        catch_up = await nth_invoice(svc, lead_id, 3)
        # By hand: (900 - 60) x 10 / 30 = 280.00
        assert catch_up["amount"] == "280.00" and "Retainer resumed 21 Apr 2031" in catch_up["lines"][0]["description"]
        again = await svc.client.post(f"/subscriptions/{sub['subscription_id']}/resume")
        assert again.status_code == 409 and "active" in again.text  # nothing billed twice
        clock.advance_to(datetime(2031, 5, 1, 1, tzinfo=UTC))
        may = await nth_invoice(svc, lead_id, 4)
        assert may["amount"] == "900.00"


async def test_retention_counts_the_contraction_and_the_expansion_back(kafka_bootstrap: str, database_url: str) -> None:
    clock = ManualClock(datetime(2031, 7, 1, 9, tzinfo=UTC))
    settings = service_settings(RetentionSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    lead_id, sub = uuid.uuid4(), uuid.uuid4()

    def price(reason: str, old: str, new: str, effective: datetime, until: datetime | None = None) -> ev.Envelope:
        payload = ev.SubscriptionPriceChanged(
            subscription_id=sub,
            reason=reason,  # type: ignore[arg-type]
            old_fee=Decimal(old),
            new_fee=Decimal(new),
            currency="EUR",
            discount_percent=Decimal(20) if reason == "discount" else None,
            effective_at=effective,
            until=until,
        )
        return e("subscription.price_changed", payload, lead_id, effective)

    channel = f"ads-{uuid.uuid4().hex[:8]}"  # this client's own channel: the database may hold others
    async with run_service(retention_app(settings, clock=clock), settings.port) as svc:
        await send(
            kafka_bootstrap,
            captured(lead_id, channel, datetime(2030, 12, 1, tzinfo=UTC), f"{channel}@example.com"),
            started(lead_id, sub, "1000", datetime(2031, 1, 1, tzinfo=UTC)),
            price("discount", "1000", "800", datetime(2031, 4, 1, tzinfo=UTC), datetime(2031, 6, 1, tzinfo=UTC)),
            price("offer_ended", "800", "1000", datetime(2031, 6, 1, tzinfo=UTC)),
        )
        await client(svc, lead_id, lambda body: Decimal((body.get("mrr") or {}).get("amount", "0")) == 1000)

        async def economics(start: str, end: str) -> dict:
            query = {"from": start, "to": end, "currency": "EUR", "channel": channel}
            return as_json(await svc.client.get("/economics", params=query))

        async def settled() -> dict | None:
            body = await economics("2031-04-01", "2031-05-01")
            return body if Decimal(body["mrr_movements"]["contraction"]) else None

        # April: 1000 at the start, 200 contraction -> NRR = GRR = 800 / 1000.
        april = await eventually(settled, timeout=30)
        assert (Decimal(april["mrr_start"]), Decimal(april["mrr_movements"]["contraction"])) == (1000, 200)
        assert (Decimal(april["nrr"]), Decimal(april["grr"])) == (Decimal("0.8"), Decimal("0.8"))
        # April to July: the 200 back as expansion -> NRR 1.0, GRR still 0.8.
        spring = await economics("2031-04-01", "2031-07-01")
        moves = spring["mrr_movements"]
        assert (Decimal(moves["contraction"]), Decimal(moves["expansion"])) == (200, 200)
        assert (Decimal(spring["nrr"]), Decimal(spring["grr"])) == (Decimal(1), Decimal("0.8"))


async def test_a_not_using_client_is_offered_a_smaller_plan_and_a_tailored_offer_is_checked(
    kafka_bootstrap: str, database_url: str
) -> None:
    clock = ManualClock(datetime(2031, 7, 1, 9, tzinfo=UTC))
    settings = service_settings(RetentionSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    lead_id, sub = uuid.uuid4(), uuid.uuid4()
    async with (
        TopicReader(kafka_bootstrap, topics.CANCELLATIONS) as reader,
        run_service(retention_app(settings, clock=clock), settings.port) as svc,
    ):
        await send(kafka_bootstrap, started(lead_id, sub, "1000", datetime(2031, 6, 1, tzinfo=UTC)))
        await client(svc, lead_id, lambda body: Decimal((body.get("mrr") or {}).get("amount", "0")) == 1000)
        asked = as_json(await svc.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "not_using"}))
        # The smaller plan: 60% of the fee for half of the 10 hours, for 3 months (the defaults).
        assert (asked["offer"]["kind"], asked["offer"]["fee"], asked["offer"]["included_hours"]) == (
            "downgrade",
            "600.00",
            "5.00",
        )
        cid = asked["cancellation_id"]
        for body, field in (
            ({"kind": "discount", "discount_percent": "150", "months": 2}, "discount_percent"),
            ({"kind": "discount", "discount_percent": "0", "months": 2}, "discount_percent"),
            ({"kind": "discount", "discount_percent": "10", "months": 0}, "months"),
            ({"kind": "downgrade", "fee": "1200", "months": 2, "included_hours": "5"}, "fee"),
            ({"kind": "downgrade", "fee": "500", "months": 2}, "included_hours"),
            ({"kind": "gift", "months": 2}, "kind"),
        ):
            refused = await svc.client.put(f"/cancellations/{cid}/offer", json=body)
            assert refused.status_code == 422 and field in refused.text, (body, refused.text)
        unchanged = as_json(await svc.client.get(f"/cancellations/{cid}"))
        assert unchanged["offer"]["kind"] == "downgrade"
        tailored = as_json(
            await svc.client.put(
                f"/cancellations/{cid}/offer", json={"kind": "discount", "discount_percent": "25", "months": 2}
            )
        )
        assert (tailored["offer"]["fee"], tailored["offer"]["months"]) == ("750.00", 2)
        accepted = as_json(await svc.client.post(f"/cancellations/{cid}/accept"))
        assert accepted["status"] == "saved"
        (taken,) = await reader.wait_for("cancellation.saved", lead_id=lead_id)
        assert (taken.data["offer"]["kind"], taken.data["offer"]["fee"]) == ("discount", "750.00")
        late = await svc.client.put(
            f"/cancellations/{cid}/offer", json={"kind": "discount", "discount_percent": "5", "months": 1}
        )
        assert late.status_code == 409 and "saved" in late.text

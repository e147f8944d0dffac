"""Billing's retainers, hours, pauses, price changes, projects, change orders, credit notes,
webhooks and dunning against a real broker and database, on a test-owned simulated clock
(a clock handed to create_app is moved only by the test)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.billing import domain
from services.billing.app import create_app
from services.billing.gateway import ChargeRequest, ChargeResult
from services.billing.settings import Settings
from services.billing.store import Account
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from tests.integration.test_billing_service import deal_won, invoices_of, pay, send
from tests.support import TopicReader, as_json, event, eventually, run_service, service_settings

pytestmark = pytest.mark.integration
EVIDENCE = os.environ.get("BILLING_EVIDENCE")


def note(text: str) -> None:
    """With BILLING_EVIDENCE=<file>, the tests write what they saw (the closing note's evidence)."""
    if EVIDENCE:
        with open(EVIDENCE, "a") as out:
            out.write(text + "\n")


def table(invoices: list[dict]) -> str:
    rows = ["| number | kind | period | amount | status | lines |", "|---|---|---|---|---|---|"]
    for i in invoices:
        period = f"{(i['period_start'] or '')[:10]} .. {(i['period_end'] or '')[:10]}" if i["period_start"] else ""
        lines = "; ".join(f"{line['description']} = {line['amount']}" for line in i["lines"])
        rows.append(
            f"| {i['number']} | {i['kind']} | {period} | {i['amount']} {i['currency']} | {i['status']} | {lines} |"
        )
    return "\n".join(rows)


class DecliningGateway:
    """A card gateway that declines every retry (records what it was asked)."""

    def __init__(self, code: str = "insufficient_funds") -> None:
        self.code = code
        self.requests: list[ChargeRequest] = []

    async def charge(self, request: ChargeRequest) -> ChargeResult | None:
        self.requests.append(request)
        return ChargeResult(succeeded=False, reference=f"ch_{uuid.uuid4().hex[:10]}", decline_code=self.code)


def billing_app(kafka_bootstrap: str, database_url: str, clock: SimulatedClock, **kw):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url, report_interval_s=0.5)
    return settings, create_app(settings, clock=clock, **kw)


async def start_retainer(svc, kafka_bootstrap: str, lead_id: uuid.UUID, *, fee: str = "1000") -> tuple[dict, dict]:
    """A retainer won (10 h included at 120/h in the test deal) with half a month's deposit, paid."""
    await send(kafka_bootstrap, deal_won(lead_id, kind="retainer", total=fee, monthly_fee=fee, share="0.5"))
    (deposit,) = await invoices_of(svc, lead_id)
    as_json(await pay(svc, deposit["invoice_id"], deposit["amount"]))
    (sub,) = as_json(await svc.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
    return deposit, sub


async def advance(svc, clock: SimulatedClock, moment: datetime, check) -> None:
    clock.advance_to(moment)
    await eventually(check, timeout=30)


def signed(body: dict, *, at: datetime, secret: str = "dev-webhook-secret-change-me") -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    return raw, {
        "Clientflow-Signature": domain.sign(body=raw, secret=secret, timestamp=int(at.timestamp())),
        "Content-Type": "application/json",
    }


async def test_a_three_month_clock_jump_issues_exactly_three_monthly_invoices(
    kafka_bootstrap: str, database_url: str
) -> None:
    clock = SimulatedClock(datetime(2031, 1, 15, 12, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        async with run_service(app, settings.port) as svc:
            deposit, sub = await start_retainer(svc, kafka_bootstrap, lead_id)
            assert deposit["amount"] == "500.00" and sub["status"] == "active"
            # Billed in advance at once: Jan 15 12:00 to Feb 1 is 16.5 of 31 days, less the deposit.
            _, first = await invoices_of(svc, lead_id, count=2)
            assert (first["kind"], first["period_start"][:10], first["period_end"][:10]) == (
                "subscription",
                "2031-01-15",
                "2031-02-01",
            )
            assert [line["amount"] for line in first["lines"]] == ["532.26", "-500.00"] and first["amount"] == "32.26"
            as_json(await pay(svc, first["invoice_id"], "32.26"))  # paid, so the jump is about invoicing, not dunning

            # 12 hours in January: 2 over the 10 included, billed at 120/h on the next invoice.
            for hours in ("7", "5"):
                entry = as_json(
                    await svc.client.post(
                        "/time-entries", json={"subscription_id": sub["subscription_id"], "hours": hours}
                    )
                )
            assert (entry["used_hours"], entry["overage_hours"]) == ("12", "2")

            async def five() -> list[dict]:
                items = as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))
                return items if len(items) >= 5 else []

            clock.advance_to(datetime(2031, 4, 15, 12, tzinfo=UTC))
            invoices = await eventually(five, timeout=30)
            monthly = invoices[2:]
            assert [(i["period_start"][:10], i["amount"]) for i in monthly] == [
                ("2031-02-01", "1240.00"),
                ("2031-03-01", "1000.00"),
                ("2031-04-01", "1000.00"),
            ]
            assert "2 h over 10 h included at 120.00/h" in monthly[0]["lines"][1]["description"]
            # This lead's numbers rise in issue order within 2031. Gaplessness across the year is
            # test_invoice_numbers_have_no_gaps' job: on the session's shared broker an earlier
            # test's leftover event may take a 2031 number here too.
            numbers = [int(i["number"].split("-")[1]) for i in invoices]
            assert numbers == sorted(set(numbers)) and all(i["number"].startswith("2031-") for i in invoices)

            # A price change in the past is refused; one ahead is announced with its notices.
            past = await svc.client.post("/price-changes", json={"percent": "10", "effective_at": "2031-04-01"})
            assert past.status_code == 422 and "past" in past.text
            change = as_json(
                await svc.client.post(
                    "/price-changes",
                    json={
                        "percent": "10",
                        "effective_at": "2031-05-01",
                        "subscription_ids": [sub["subscription_id"]],
                    },
                )
            )
            assert change["subscriptions"][0]["new_price"] == "1100.00"
            assert [d[:10] for d in change["notice_dates"]] == ["2031-04-24"]  # 30 days before has passed
            usage = await reader.wait_for("hours.usage_reported", lead_id=lead_id, count=3)
            scheduled = await reader.wait_for("price.change_scheduled", lead_id=lead_id)

        # After a restart, on the same database: the periods billed stay billed.
        settings, app = billing_app(kafka_bootstrap, database_url, clock)
        async with run_service(app, settings.port) as svc:

            async def six() -> list[dict]:
                items = as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))
                return items if len(items) >= 6 else []

            clock.advance_to(datetime(2031, 5, 2, 9, tzinfo=UTC))
            invoices = await eventually(six, timeout=30)
            may = invoices[5]
            assert (may["period_start"][:10], may["amount"]) == ("2031-05-01", "1100.00")
            clock.advance_to(datetime(2031, 5, 3, 9, tzinfo=UTC))
            summary = as_json(await svc.client.get("/reports/summary"))
            assert summary["mrr"] == {"EUR": "1100.00"}
            assert len(as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))) == 6
            metrics = (await svc.client.get("/metrics")).text
            assert 'clientflow_billing_mrr{currency="EUR"} 1100.0' in metrics
            # Read while the service runs: the relay publishes what the outbox holds.
            issued = await reader.wait_for("invoice.issued", lead_id=lead_id, count=6)
    assert len(reader.events("invoice.issued", lead_id=lead_id)) == 6
    assert [ev.HoursUsageReported.model_validate(u.data).used_hours for u in usage[:3]] == [Decimal(12), 0, 0]
    assert ev.HoursUsageReported.model_validate(usage[0].data).overage_amount == Decimal("240.00")
    assert ev.PriceChangeScheduled.model_validate(scheduled[0].data).new_price == Decimal("1100.00")
    assert ev.InvoiceIssued.model_validate(issued[2].data).hours_used == Decimal(12)
    note("## A retainer over simulated months (1000 EUR/month, 10 h included, 120 EUR/h overage)\n")
    note(
        "Started 2031-01-15 12:00 when its 500 EUR deposit cleared; 12 h worked in January; clock jumped to "
        "2031-04-15 (three monthly invoices), +10 % price change effective 2031-05-01, service restarted, "
        "clock moved to 2031-05-02.\n"
    )
    note(table(invoices) + "\n")


async def test_pause_resume_and_cancel_mid_period(kafka_bootstrap: str, database_url: str) -> None:
    clock = SimulatedClock(datetime(2031, 3, 1, 8, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        _, sub = await start_retainer(svc, kafka_bootstrap, lead_id, fee="900")
        _, first = await invoices_of(svc, lead_id, count=2)
        as_json(await pay(svc, first["invoice_id"], first["amount_due"]))  # paid: this test is not about dunning
        saved = event(
            "cancellation.saved",
            ev.CancellationSaved(
                cancellation_id=uuid.uuid4(),
                subscription_id=uuid.UUID(sub["subscription_id"]),
                offer=ev.SaveOffer(kind="pause", fee=Decimal("49"), months=3, currency="EUR"),
            ),
            lead_id=lead_id,
        )
        await send(kafka_bootstrap, saved, saved)  # redelivered: paused once
        await reader.wait_for("subscription.paused", lead_id=lead_id)
        summary = as_json(await svc.client.get("/reports/summary"))
        assert summary["mrr"] == {} and summary["subscriptions"] == {"paused": 1}  # paused: not in MRR, not churn
        blocked = await svc.client.post("/time-entries", json={"subscription_id": sub["subscription_id"], "hours": "1"})
        assert blocked.status_code == 409 and "paused" in blocked.text

        async def count(n: int):
            async def check() -> list[dict]:
                items = as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))
                return items if len(items) >= n else []

            return check

        clock.advance_to(datetime(2031, 4, 2, tzinfo=UTC))
        april = (await eventually(await count(3)))[2]
        assert (april["amount"], april["lines"][0]["description"][:26]) == ("49.00", "Retainer (paused, low fee)")
        as_json(await pay(svc, april["invoice_id"], "49.00"))
        resumed = as_json(await svc.client.post(f"/subscriptions/{sub['subscription_id']}/resume"))
        assert resumed["status"] == "active"
        # Resumed on April 2: the rest of April at the full fee less the pause fee, (900 - 49) x 29/30.
        catch_up = (await eventually(await count(4)))[3]
        assert catch_up["amount"] == "822.63"
        as_json(await pay(svc, catch_up["invoice_id"], "822.63"))
        clock.advance_to(datetime(2031, 5, 1, 1, tzinfo=UTC))
        may = (await eventually(await count(5)))[4]
        assert may["amount"] == "900.00"
        # Cancelled on May 11, 00:00: the 21 unused days of 31 come back by credit note.
        leaving = event(
            "cancellation.completed",
            ev.CancellationCompleted(
                cancellation_id=uuid.uuid4(),
                reason="budget",
                effective_at=datetime(2031, 5, 11, tzinfo=UTC),
            ),
            lead_id=lead_id,
        )
        clock.advance_to(datetime(2031, 5, 11, tzinfo=UTC))
        await send(kafka_bootstrap, leaving)
        (cancelled,) = await reader.wait_for("subscription.cancelled", lead_id=lead_id)
        (credit,) = await reader.wait_for("credit_note.issued", lead_id=lead_id)
        await reader.wait_for("subscription.resumed", lead_id=lead_id)
        time_on_cancelled = await svc.client.post(
            "/time-entries", json={"subscription_id": sub["subscription_id"], "hours": "1"}
        )
    assert time_on_cancelled.status_code == 409 and "cancelled" in time_on_cancelled.text
    assert ev.CreditNoteIssued.model_validate(credit.data).amount == Decimal("609.68")  # 900 x 21/31
    assert ev.CreditNoteIssued.model_validate(credit.data).invoice_id == uuid.UUID(may["invoice_id"])
    assert ev.SubscriptionCancelled.model_validate(cancelled.data).reason == "budget"
    assert len(reader.events("subscription.paused", lead_id=lead_id)) == 1


async def test_webhooks_retries_and_the_overdue_ladder(kafka_bootstrap: str, database_url: str) -> None:
    start = datetime(2031, 6, 10, 9, tzinfo=UTC)
    clock = SimulatedClock(start)
    lead_id = uuid.uuid4()
    gateway = DecliningGateway()
    settings, app = billing_app(kafka_bootstrap, database_url, clock, gateway=gateway)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        _, _sub = await start_retainer(svc, kafka_bootstrap, lead_id, fee="3000")
        _, first = await invoices_of(svc, lead_id, count=2)
        assert first["amount"] == "562.50"  # Jun 10 09:00 - Jul 1 (20.625/30 of 3000) less the deposit
        body = {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.failed",
            "data": {
                "invoice_id": first["invoice_id"],
                "amount": first["amount"],
                "currency": "EUR",
                "reference": "ch_1",
                "decline_code": "insufficient_funds",
            },
        }
        raw, headers = signed(body, at=start)
        assert (await svc.client.post("/payments/webhook", content=raw, headers=headers)).json()["status"] == "applied"
        again = await svc.client.post("/payments/webhook", content=raw, headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        bad = await svc.client.post(
            "/payments/webhook",
            content=raw,
            headers=headers | {"Clientflow-Signature": _tampered(headers["Clientflow-Signature"])},
        )
        assert bad.status_code == 400 and "bad signature" in bad.text
        old_raw, old_headers = signed(body | {"id": "evt_old"}, at=start - timedelta(minutes=10))
        old = await svc.client.post("/payments/webhook", content=old_raw, headers=old_headers)
        assert old.status_code == 400 and "tolerance" in old.text
        unknown_raw, unknown_headers = signed(
            body | {"id": "evt_x", "data": body["data"] | {"invoice_id": str(uuid.uuid4())}}, at=start
        )
        assert (
            await svc.client.post("/payments/webhook", content=unknown_raw, headers=unknown_headers)
        ).status_code == 404

        due = datetime.fromisoformat(first["due_at"])
        steps = [start + timedelta(days=d, minutes=1) for d in (1, 3, 5, 7)] + [
            due + timedelta(days=d, minutes=1) for d in (1, 10, 14, 21)
        ]
        for moment in steps:
            seen = len(reader.events("dunning.state_changed", lead_id=lead_id)) + len(
                reader.events("payment.failed", lead_id=lead_id)
            )
            clock.advance_to(moment)

            async def moved(seen: int = seen) -> bool:
                await reader._poll()
                now_seen = len(reader.events("dunning.state_changed", lead_id=lead_id)) + len(
                    reader.events("payment.failed", lead_id=lead_id)
                )
                return now_seen > seen

            await eventually(moved, timeout=30)
        await reader.wait_for("subscription.cancelled", lead_id=lead_id)
        (after,) = as_json(await svc.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        summary = as_json(await svc.client.get("/reports/summary"))
    failed = [ev.PaymentFailed.model_validate(e.data) for e in reader.events("payment.failed", lead_id=lead_id)]
    assert [f.attempt for f in failed] == [1, 2, 3, 4, 5]
    assert [f.next_retry_at.date().isoformat() if f.next_retry_at else None for f in failed] == [
        "2031-06-11",
        "2031-06-13",
        "2031-06-15",
        "2031-06-17",
        None,
    ]
    assert len(gateway.requests) == 4
    states = [
        ev.DunningStateChanged.model_validate(e.data) for e in reader.events("dunning.state_changed", lead_id=lead_id)
    ]
    assert [s.to_state for s in states] == ["retrying", "overdue", "warning", "blocked", "cancelled"]
    (overdue,) = reader.events("invoice.overdue", lead_id=lead_id)
    assert ev.InvoiceOverdue.model_validate(overdue.data).days_overdue == 1
    cancelled = ev.SubscriptionCancelled.model_validate(
        reader.events("subscription.cancelled", lead_id=lead_id)[0].data
    )
    assert cancelled.reason == "non_payment" and after["status"] == "cancelled" and after["service_blocked"] is True
    assert summary["dunning"].get("cancelled", 0) >= 1
    note("## A dunning path (card declined, insufficient funds; invoice due " + due.date().isoformat() + ")\n")
    note("| business time | event | detail |\n|---|---|---|")
    timeline = sorted(
        reader.events("payment.failed", lead_id=lead_id)
        + reader.events("dunning.state_changed", lead_id=lead_id)
        + reader.events("invoice.overdue", lead_id=lead_id)
        + reader.events("subscription.cancelled", lead_id=lead_id)
        + reader.events("credit_note.issued", lead_id=lead_id),
        key=lambda e: e.occurred_at,
    )
    for e in timeline:
        d = e.data
        detail = {
            "payment.failed": lambda d=d: (
                f"attempt {d['attempt']}, {d['decline_code']}, next retry {d['next_retry_at']}"
            ),
            "dunning.state_changed": lambda d=d: f"{d['from_state']} -> {d['to_state']} ({d['reason']})",
            "invoice.overdue": lambda d=d: f"{d['amount_due']} {d['currency']} {d['days_overdue']} day(s) overdue",
            "subscription.cancelled": lambda d=d: f"reason {d['reason']}",
            "credit_note.issued": lambda d=d: f"{d['number']} {d['amount']} {d['currency']}: {d['reason']}",
        }[e.type]()
        note(f"| {e.occurred_at.isoformat()} | {e.type} | {detail} |")
    note("")


async def test_expired_card_grace_hard_decline_tier_and_takeover(kafka_bootstrap: str, database_url: str) -> None:
    start = datetime(2031, 9, 1, 9, tzinfo=UTC)
    clock = SimulatedClock(start)
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        tier = event("client.tier_changed", ev.ClientTierChanged(from_tier="good", to_tier="best"), lead_id=lead_id)
        await send(kafka_bootstrap, tier, deal_won(lead_id, total="1000"), deal_won(lead_id, total="2000"))
        expired, stolen = await invoices_of(svc, lead_id, count=2)
        for invoice, code in ((expired, "expired_card"), (stolen, "stolen_card")):
            raw, headers = signed(
                {
                    "id": f"evt_{uuid.uuid4().hex}",
                    "type": "payment.failed",
                    "data": {
                        "invoice_id": invoice["invoice_id"],
                        "amount": invoice["amount"],
                        "currency": "EUR",
                        "decline_code": code,
                    },
                },
                at=start,
            )
            assert (await svc.client.post("/payments/webhook", content=raw, headers=headers)).status_code == 200
        failed = {
            e.data["decline_code"]: ev.PaymentFailed.model_validate(e.data)
            for e in await reader.wait_for("payment.failed", lead_id=lead_id, count=2)
        }
        assert failed["stolen_card"].hard_decline is True and failed["stolen_card"].next_retry_at is None
        assert failed["expired_card"].hard_decline is False and failed["expired_card"].next_retry_at is None
        (grace,) = await reader.wait_for("dunning.state_changed", lead_id=lead_id)
        assert grace.data["to_state"] == "grace" and "2031-09-22" in grace.data["reason"]  # 14 + 7 days for `best`

        async def account() -> Account:
            async with svc.runtime.uow.sessions() as session:
                return await session.get(Account, lead_id)

        assert (await account()).tier == "best"
        # A human takes the client over: reminders wait until the takeover ends.
        await send(kafka_bootstrap, event("takeover.started", ev.TakeoverStarted(by="founder"), lead_id=lead_id))
        await eventually(lambda: _true(account(), lambda a: a.takeover_since is not None))
        clock.advance_to(start + timedelta(days=7 + 18))  # the stolen-card deposit is 18 days overdue
        await eventually(lambda: _true(account(), lambda a: a.takeover_since is not None))
        await reader._poll()
        assert len(reader.events("dunning.state_changed", lead_id=lead_id)) == 1
        await send(kafka_bootstrap, event("takeover.ended", ev.TakeoverEnded(by="founder"), lead_id=lead_id))
        await eventually(lambda: _true(account(), lambda a: a.takeover_since is None))
        clock.advance_to(start + timedelta(days=7 + 18, minutes=5))
        changes = await reader.wait_for("dunning.state_changed", lead_id=lead_id, count=3, timeout=30)
    by_invoice = {c.data["invoice_id"]: c.data["to_state"] for c in changes[1:]}
    # `best`: the stolen card's invoice is at warning (17 days), not blocked (14 + 7 = 21);
    # the expired card's grace ended on Sep 22: its ladder counts from there (overdue, no warning).
    assert by_invoice == {stolen["invoice_id"]: "warning", expired["invoice_id"]: "overdue"}


def _tampered(signature: str) -> str:
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


async def _true(value, predicate) -> bool:
    return bool(predicate(await value))


async def test_projects_change_orders_and_credit_notes(kafka_bootstrap: str, database_url: str) -> None:
    clock = SimulatedClock(datetime(2031, 2, 2, 9, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        won = deal_won(lead_id, total="3000", share="0.30")
        deal_id = won.data["deal_id"]
        await send(kafka_bootstrap, won)
        (deposit,) = await invoices_of(svc, lead_id)
        early = await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "milestone", "amount": "500"})
        assert early.status_code == 409 and "deposit" in early.text
        as_json(await pay(svc, deposit["invoice_id"], "900"))
        milestone = await svc.client.post(
            f"/deals/{deal_id}/invoices", json={"kind": "milestone", "amount": "1000", "description": "Design approved"}
        )
        assert milestone.status_code == 201 and milestone.headers["X-Remaining"] == "1100.00"
        too_much = await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "milestone", "amount": "2000"})
        assert too_much.status_code == 422 and "remains" in too_much.text
        final = as_json(await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "final"}))
        assert (final["kind"], final["amount"]) == ("final", "1100.00")
        assert (await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "final"})).status_code == 409

        def change(amount: str, in_scope: bool) -> ev.Envelope:
            return event(
                "deal.change_requested",
                ev.DealChangeRequested(
                    deal_id=uuid.UUID(deal_id),
                    request_id=uuid.uuid4(),
                    description="Extra page",
                    in_scope=in_scope,
                    hours=Decimal(4),
                    amount=Decimal(amount),
                    currency="EUR",
                ),
                lead_id=lead_id,
                producer_name="leads",
            )

        inside, priced, slipped = change("0", True), change("400", False), change("250", False)
        await send(kafka_bootstrap, inside, priced, priced, slipped)  # priced redelivered

        async def orders() -> list[dict]:
            items = as_json(await svc.client.get("/change-orders", params={"deal_id": deal_id}))
            return items if len(items) >= 3 else []

        found = {o["request_id"]: o for o in await eventually(orders)}
        assert len(found) == 3 and found[inside.data["request_id"]]["status"] == "in_scope"
        approved = as_json(await svc.client.post(f"/change-orders/{priced.data['request_id']}/approve"))
        again = as_json(await svc.client.post(f"/change-orders/{priced.data['request_id']}/approve"))
        assert approved["status"] == "invoiced" and again["invoice_id"] == approved["invoice_id"]
        assert (await svc.client.post(f"/change-orders/{inside.data['request_id']}/approve")).status_code == 409
        as_json(await svc.client.post(f"/change-orders/{slipped.data['request_id']}/work-done"))
        leaked = as_json(await svc.client.get("/reports/leaked-revenue", params={"lead_id": str(lead_id)}))
        assert leaked["totals"] == {"EUR": "250.00"} and len(leaked["change_orders"]) == 1

        # Corrections: credit notes, never edits.
        cn = as_json(
            await svc.client.post(
                f"/invoices/{final['invoice_id']}/credit-notes",
                json={"amount": "100", "currency": "EUR", "reason": "discount"},
            )
        )
        assert (cn["reduces_due"], cn["number"]) == ("100.00", "CN-2031-000001")
        refund = as_json(
            await svc.client.post(
                f"/invoices/{deposit['invoice_id']}/credit-notes",
                json={"amount": "50", "currency": "EUR", "reason": "goodwill", "refund": True},
            )
        )
        assert (refund["refunded"], refund["number"]) == ("50.00", "CN-2031-000002")
        wrong = await svc.client.post(
            f"/invoices/{final['invoice_id']}/credit-notes", json={"amount": "10", "currency": "USD", "reason": "x"}
        )
        assert wrong.status_code == 422 and "differs" in wrong.text
        assert (
            await svc.client.post(
                f"/invoices/{final['invoice_id']}/credit-notes", json={"amount": "-1", "currency": "EUR", "reason": "x"}
            )
        ).status_code == 422
        read = as_json(await svc.client.get(f"/invoices/{final['invoice_id']}"))
        assert (read["amount"], read["amount_credited"], read["amount_due"]) == ("1100.00", "100.00", "1000.00")
        paid = as_json(await pay(svc, final["invoice_id"], "1000"))
        assert paid["invoice_status"] == "paid"
        # A project webhook payment applied once even when the provider sends it twice.
        (co_invoice,) = [
            i
            for i in as_json(await svc.client.get("/invoices", params={"lead_id": str(lead_id)}))
            if i["kind"] == "change_order"
        ]
        hook = {
            "id": "evt_" + uuid.uuid4().hex,
            "type": "payment.succeeded",
            "data": {
                "invoice_id": co_invoice["invoice_id"],
                "amount": "400.00",
                "currency": "EUR",
                "reference": "ch_" + uuid.uuid4().hex,
            },
        }
        raw, headers = signed(hook, at=clock.now())
        first = as_json(await svc.client.post("/payments/webhook", content=raw, headers=headers))
        other_id_same_charge = signed(hook | {"id": "evt_" + uuid.uuid4().hex}, at=clock.now())
        dup = await svc.client.post(
            "/payments/webhook", content=other_id_same_charge[0], headers=other_id_same_charge[1]
        )
        assert first["invoice_status"] == "paid" and dup.status_code == 409
        metrics = (await svc.client.get("/metrics")).text
        await reader.wait_for("credit_note.issued", lead_id=lead_id, count=2)
        kinds = [e.data["kind"] for e in await reader.wait_for("invoice.issued", lead_id=lead_id, count=4)]
        await reader.wait_for("payment.succeeded", lead_id=lead_id, count=3)  # the webhook's may come last
    assert sorted(kinds) == ["change_order", "deposit", "final", "milestone"]
    assert len(reader.events("payment.succeeded", lead_id=lead_id)) == 3
    assert 'clientflow_billing_change_requests_total{outcome="in_scope"} 1.0' in metrics
    assert 'clientflow_billing_refunded_total{currency="EUR"} 50.0' in metrics

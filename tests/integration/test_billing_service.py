"""Billing against a real broker and a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from services.billing.app import create_app
from services.billing.settings import Settings
from services.billing.store import Account, Deal, Payment
from shared import events as ev
from shared import topics
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def billing(kafka_bootstrap: str, database_url: str):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


def deal_won(
    lead_id: uuid.UUID,
    *,
    kind: str = "project",
    total: str = "3000",
    share: str = "0.30",
    monthly_fee: str | None = None,
    currency: str = "EUR",
    deal_id: uuid.UUID | None = None,
) -> ev.Envelope:
    payload = ev.DealWon(
        deal_id=deal_id or uuid.uuid4(),
        title="Website relaunch" if kind == "project" else "SEO retainer",
        kind=kind,  # type: ignore[arg-type]
        currency=currency,
        lines=[ev.ScopeLine(description="Work", hours=Decimal(20), amount=Decimal(total))],
        total=Decimal(total),
        monthly_fee=Decimal(monthly_fee) if monthly_fee else None,
        included_hours=Decimal(10) if kind == "retainer" else None,
        hourly_rate=Decimal(120) if kind == "retainer" else None,
        signed_by="Ada Lovelace",
        signed_at=datetime.now(UTC),
        deposit_share=Decimal(share),
    )
    return event("deal.won", payload, lead_id=lead_id, producer_name="leads")


async def send(bootstrap: str, *envelopes: ev.Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def invoices_of(billing, lead_id: uuid.UUID, count: int = 1) -> list[dict]:
    async def found() -> list[dict]:
        items = as_json(await billing.client.get("/invoices", params={"lead_id": str(lead_id)}))
        return items if len(items) >= count else []

    return await eventually(found)


async def pay(billing, invoice: str, amount: str, /, **extra: str):
    body = {"invoice_id": invoice, "amount": amount, "currency": "EUR", "method": "bank_transfer", "reference": "TRF-1"}
    return await billing.client.post("/payments", json=body | extra)


async def test_deposit_invoice_then_partial_and_final_payment_authorize_the_deal(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    won = deal_won(lead_id, total="3000", share="0.30")
    deal_id = won.data["deal_id"]
    await send(kafka_bootstrap, won)

    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (issued,) = await reader.wait_for("invoice.issued", lead_id=lead_id)
        invoice = ev.InvoiceIssued.model_validate(issued.data)
        assert (invoice.kind, invoice.amount, invoice.currency) == ("deposit", Decimal("900.00"), "EUR")
        assert str(invoice.deal_id) == deal_id and issued.producer == "billing"
        assert invoice.due_at - invoice.issued_at == timedelta(days=7)
        assert invoice.number.startswith(f"{invoice.issued_at.year}-") and len(invoice.number) == 11
        assert invoice.lines[0].description == "Deposit: 30% of the estimate (Website relaunch)"

        auth = as_json(await billing.client.get(f"/deals/{deal_id}/authorization"))
        assert auth["may_start"] is False and auth["amount_due"] == "900.00" and auth["currency"] == "EUR"
        assert auth["deposit_invoice_id"] == str(invoice.invoice_id) and auth["deposit_cleared_at"] is None

        partial = await pay(billing, str(invoice.invoice_id), "400")
        assert partial.status_code == 201, partial.text
        assert partial.json() | {"payment_id": None, "paid_at": None} == {
            "payment_id": None,
            "paid_at": None,
            "invoice_id": str(invoice.invoice_id),
            "amount": "400.00",
            "currency": "EUR",
            "method": "bank_transfer",
            "reference": "TRF-1",
            "applied": "400.00",
            "credited": "0.00",
            "credit_balance": "0.00",
            "invoice_status": "open",
            "amount_due": "500.00",
            "days_late": 0,
        }
        auth = as_json(await billing.client.get(f"/deals/{deal_id}/authorization"))
        assert auth["may_start"] is False and auth["amount_due"] == "500.00"

        rest = as_json(await pay(billing, str(invoice.invoice_id), "600.00"))
        assert (rest["invoice_status"], rest["amount_due"], rest["credited"], rest["credit_balance"]) == (
            "paid",
            "0.00",
            "100.00",
            "100.00",
        )
        auth = as_json(await billing.client.get(f"/deals/{deal_id}/authorization"))
        assert auth["may_start"] is True and auth["amount_due"] == "0.00" and auth["deposit_cleared_at"]

        # A payment after the deposit cleared is credit and must not clear it a second time.
        late = as_json(await pay(billing, str(invoice.invoice_id), "10"))
        assert late["credited"] == "10.00" and late["credit_balance"] == "110.00"
        succeeded = await reader.wait_for("payment.succeeded", lead_id=lead_id, count=3)
        cleared = reader.events("deposit.cleared", lead_id=lead_id)
    assert [ev.PaymentSucceeded.model_validate(e.data).invoice_paid for e in succeeded] == [False, True, True]
    assert len(cleared) == 1
    done = ev.DepositCleared.model_validate(cleared[0].data)
    assert (str(done.deal_id), done.invoice_id, done.amount) == (deal_id, invoice.invoice_id, Decimal("900.00"))
    assert reader.events("subscription.started", lead_id=lead_id) == []

    read = as_json(await billing.client.get(f"/invoices/{invoice.invoice_id}"))
    assert (read["status"], read["amount"], read["amount_paid"], read["amount_due"]) == (
        "paid",
        "900.00",
        "900.00",
        "0.00",
    )
    assert [p["amount"] for p in read["payments"]] == ["400.00", "600.00", "10.00"]

    metrics = (await billing.client.get("/metrics")).text
    assert 'clientflow_billing_invoices_issued_total{kind="deposit"}' in metrics
    assert 'clientflow_billing_payments_total{method="bank_transfer"} 3.0' in metrics
    assert 'clientflow_billing_revenue_received_total{currency="EUR"} 1010.0' in metrics
    assert "clientflow_billing_deposits_cleared_total 1.0" in metrics


async def test_retainer_starts_when_its_deposit_clears_and_ends_on_cancellation(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    won = deal_won(lead_id, kind="retainer", total="1500", monthly_fee="1200", share="0.5")
    await send(kafka_bootstrap, won)
    (invoice,) = await invoices_of(billing, lead_id)
    # The retainer's deposit is a share of the first month's fee, not of the estimate's total.
    assert invoice["amount"] == "600.00" and invoice["subscription_id"]
    (pending,) = as_json(await billing.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
    assert (pending["status"], pending["monthly_fee"], pending["started_at"]) == ("pending", "1200.00", None)

    assert (await pay(billing, invoice["invoice_id"], "600.00")).status_code == 201
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (started,) = await reader.wait_for("subscription.started", lead_id=lead_id)
        assert ev.SubscriptionStarted.model_validate(started.data).monthly_fee == Decimal("1200")
        (active,) = as_json(await billing.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        assert active["status"] == "active" and active["current_period_end"]

        leaving = event(
            "cancellation.completed",
            ev.CancellationCompleted(cancellation_id=uuid.uuid4(), reason="budget", effective_at=datetime.now(UTC)),
            lead_id=lead_id,
        )
        await send(kafka_bootstrap, leaving, leaving)  # redelivered: cancels once
        (cancelled,) = await reader.wait_for("subscription.cancelled", lead_id=lead_id)
    payload = ev.SubscriptionCancelled.model_validate(cancelled.data)
    assert (payload.subscription_id, payload.monthly_fee, payload.currency, payload.reason) == (
        uuid.UUID(active["subscription_id"]),
        Decimal("1200"),
        "EUR",
        "budget",
    )

    async def is_cancelled() -> bool:
        items = as_json(await billing.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
        return items[0]["status"] == "cancelled" and items[0]["cancelled_at"] is not None

    await eventually(is_cancelled)


async def test_pause_offer_pauses_and_erasure_forgets_the_person(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, deal_won(lead_id, kind="retainer", total="900", monthly_fee="900", share="0.2"))
    (invoice,) = await invoices_of(billing, lead_id)
    as_json(await pay(billing, invoice["invoice_id"], "180", reference="Transfer from Ada Lovelace"))
    saved = event(
        "cancellation.saved",
        ev.CancellationSaved(
            cancellation_id=uuid.uuid4(),
            offer=ev.SaveOffer(kind="pause", fee=Decimal("49"), months=2, currency="EUR"),
        ),
        lead_id=lead_id,
    )
    erased = event("lead.erased", ev.LeadErased(requested_at=datetime.now(UTC)), lead_id=lead_id)
    await send(kafka_bootstrap, saved, erased)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (paused,) = await reader.wait_for("subscription.paused", lead_id=lead_id)
    payload = ev.SubscriptionPaused.model_validate(paused.data)
    assert payload.paused_fee == Decimal("49.00") and payload.currency == "EUR" and payload.until is not None
    (sub,) = as_json(await billing.client.get("/subscriptions", params={"lead_id": str(lead_id)}))
    assert (sub["status"], sub["paused_fee"]) == ("paused", "49.00")

    async def forgotten() -> bool:
        async with billing.runtime.uow.sessions() as session:
            account = await session.get(Account, lead_id)
            signers = list(await session.scalars(select(Deal.signed_by).where(Deal.lead_id == lead_id)))
            references = list(await session.scalars(select(Payment.reference).where(Payment.lead_id == lead_id)))
        return (
            account is not None
            and account.erased_at is not None
            and account.contact_name is None
            and signers == [None]
            and references == [None]
        )

    await eventually(forgotten)
    # Amounts stay: the invoice is still there, paid.
    assert as_json(await billing.client.get(f"/invoices/{invoice['invoice_id']}"))["amount_paid"] == "180.00"


async def test_zero_share_clears_at_once(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    won = deal_won(lead_id, share="0")
    await send(kafka_bootstrap, won)
    (invoice,) = await invoices_of(billing, lead_id)
    assert (invoice["amount"], invoice["status"], invoice["amount_due"]) == ("0.00", "paid", "0.00")
    auth = as_json(await billing.client.get(f"/deals/{won.data['deal_id']}/authorization"))
    assert auth["may_start"] is True
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (cleared,) = await reader.wait_for("deposit.cleared", lead_id=lead_id)
    assert ev.DepositCleared.model_validate(cleared.data).amount == Decimal(0)


async def test_redelivered_deal_won_opens_one_invoice(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    won = deal_won(lead_id)
    # The same deal won again under a new event id (a producer retry after a crash).
    again = deal_won(lead_id, deal_id=uuid.UUID(won.data["deal_id"]))
    marker = deal_won(lead_id, total="1000")
    await send(kafka_bootstrap, won, won, again, marker)
    # Same key, same partition: once the marker's invoice exists, the earlier ones were applied.
    invoices = await invoices_of(billing, lead_id, count=2)
    assert sorted(i["deal_id"] for i in invoices) == sorted([won.data["deal_id"], marker.data["deal_id"]])
    assert sorted(i["amount"] for i in invoices) == ["300.00", "900.00"]
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        await reader.wait_for("invoice.issued", lead_id=lead_id, count=2)
        assert len(reader.events("invoice.issued", lead_id=lead_id)) == 2


async def test_bad_payments_answer_4xx_and_change_nothing(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, deal_won(lead_id, total="1000"), deal_won(lead_id, total="2000"))
    first, second = await invoices_of(billing, lead_id, count=2)
    voided = as_json(
        await billing.client.post(f"/invoices/{second['invoice_id']}/void", json={"reason": "re-estimated"})
    )
    assert voided["status"] == "void" and voided["number"] == second["number"]
    before = as_json(await billing.client.get(f"/invoices/{first['invoice_id']}"))

    cases = [
        ({"invoice_id": str(uuid.uuid4())}, 404, "no invoice"),
        ({"invoice_id": second["invoice_id"]}, 409, "void"),
        ({"currency": "USD"}, 422, "differs"),
        ({"amount": "0"}, 422, "greater than zero"),
        ({"amount": "-5"}, 422, "greater than zero"),
        ({"amount": "1.001"}, 422, "two decimal"),
        ({"method": "pigeon"}, 422, "unknown method"),
        ({"currency": "XYZ"}, 422, "unknown currency"),
    ]
    for change, status, message in cases:
        response = await pay(billing, first["invoice_id"], "100", **change)
        assert response.status_code == status and message in response.text, (change, response.text)
    noauth = await billing.client.post(
        "/payments",
        json={"invoice_id": first["invoice_id"], "amount": "100", "currency": "EUR", "method": "cash"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert noauth.status_code == 401
    assert (await billing.client.get(f"/deals/{uuid.uuid4()}/authorization")).status_code == 404
    assert (await billing.client.get(f"/invoices/{uuid.uuid4()}")).status_code == 404

    assert as_json(await billing.client.get(f"/invoices/{first['invoice_id']}")) == before
    assert as_json(await billing.client.get(f"/invoices/{second['invoice_id']}"))["payments"] == []
    good = as_json(await pay(billing, first["invoice_id"], "100"))
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (only,) = await reader.wait_for("payment.succeeded", lead_id=lead_id)
    assert only.data["payment_id"] == good["payment_id"]
    # A paid invoice cannot be voided; voiding twice is harmless.
    assert (await billing.client.post(f"/invoices/{first['invoice_id']}/void", json={"reason": "x"})).status_code == 409
    assert (
        await billing.client.post(f"/invoices/{second['invoice_id']}/void", json={"reason": "x"})
    ).status_code == 200
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader:
        (voided_event,) = await reader.wait_for("invoice.voided", lead_id=lead_id)
    assert voided_event.data["reason"] == "re-estimated" and voided_event.data["number"] == second["number"]


async def test_idempotency_key_records_a_payment_once(billing, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, deal_won(lead_id, total="1000"))
    (invoice,) = await invoices_of(billing, lead_id)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"invoice_id": invoice["invoice_id"], "amount": "100", "currency": "EUR", "method": "card"}
    first = await billing.client.post("/payments", json=body, headers=key)
    # Retried the moment the first answer arrived: the key is already stored as done.
    again = await billing.client.post("/payments", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 201) and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(as_json(await billing.client.get(f"/invoices/{invoice['invoice_id']}"))["payments"]) == 1


async def test_invoice_numbers_have_no_gaps(billing, kafka_bootstrap: str) -> None:
    leads = [uuid.uuid4() for _ in range(6)]
    good = [deal_won(lead, total=str(1000 + i)) for i, lead in enumerate(leads)]
    # A retainer without a fee is refused (dead-lettered). It fails the batch it came in, whose
    # invoices already took numbers: the rollback gives them back, and the batch is applied
    # again one event at a time, so the sequence must still have no gaps.
    bad = deal_won(leads[0], kind="retainer", monthly_fee=None)
    await send(kafka_bootstrap, *good[:3], bad, *good[3:])
    for lead in leads:
        await invoices_of(billing, lead)

    response = await billing.client.get("/invoices", params={"limit": 500})
    everything = as_json(response)
    by_year: dict[str, list[int]] = {}
    for item in everything:
        year, sequence = item["number"].split("-")
        assert year == item["issued_at"][:4]
        by_year.setdefault(year, []).append(int(sequence))
    for sequences in by_year.values():
        assert sorted(sequences) == list(range(1, len(sequences) + 1))
    assert int(response.headers["X-Total-Count"]) == len(everything) >= 6
    async with TopicReader(kafka_bootstrap, topics.dlq(topics.DEALS)) as reader:
        records = await reader.records(topics.dlq(topics.DEALS), count=1)
    mine = [r for r in records if r.key == str(leads[0]).encode()]
    assert [dict(r.headers)["x-dlq-reason"] for r in mine] == [b"rejected"]

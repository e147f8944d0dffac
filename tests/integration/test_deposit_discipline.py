"""Deposit discipline on a real broker and database: a deposit invoice left unpaid past its grace
days raises `refuses_deposit` on the lead, with the invoice as evidence, and a task for the owner;
one that cleared or was voided raises nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from clientflow.cli import _advance
from services.leads.app import create_app
from services.leads.settings import Settings
from shared import events as ev
from shared import topics
from shared.embedded import EmbeddedBroker
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration

DUE = datetime(2031, 3, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own, so its business clock starts where this test puts it."""
    broker = EmbeddedBroker(log_file=tmp_path_factory.mktemp("deposit-broker") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


def deposit_invoice(lead_id: uuid.UUID, invoice_id: uuid.UUID, number: str) -> ev.Envelope:
    return event(
        "invoice.issued",
        ev.InvoiceIssued(
            invoice_id=invoice_id,
            number=number,
            kind="deposit",
            deal_id=uuid.uuid4(),
            amount=Decimal("1500"),
            currency="EUR",
            issued_at=DUE - timedelta(days=14),
            due_at=DUE,
        ),
        lead_id=lead_id,
        producer_name="billing",
    )


async def test_an_unpaid_deposit_raises_refuses_deposit_and_a_task(own_broker: str, database_url: str) -> None:
    settings = service_settings(Settings, bootstrap=own_broker, database_url=database_url, clock="simulated")
    async with run_service(create_app(settings), settings.port) as leads:
        await _advance(own_broker, days=0, hours=0, to=(DUE - timedelta(days=14)).isoformat())

        async def at_start() -> bool:
            return leads.runtime.clock.now() >= DUE - timedelta(days=14)

        await eventually(at_start)
        ids = []
        for name in ("Unpaid", "Paid", "Voided"):
            body = {"name": name, "email": f"{uuid.uuid4().hex[:8]}@{name.lower()}.example", "channel": "website"}
            ids.append(uuid.UUID(as_json(await leads.client.post("/leads", json=body))["lead_id"]))
        unpaid, paid, voided = ids
        invoices = [uuid.uuid4() for _ in ids]
        async with producer(own_broker) as p:
            for n, (lead_id, invoice_id) in enumerate(zip(ids, invoices, strict=True)):
                await publish(p, deposit_invoice(lead_id, invoice_id, f"2031-00000{n + 1}"))
            await publish(
                p,
                event(
                    "deposit.cleared",
                    ev.DepositCleared(
                        deal_id=uuid.uuid4(),
                        invoice_id=invoices[1],
                        amount=Decimal("1500"),
                        currency="EUR",
                        cleared_at=DUE - timedelta(days=1),
                    ),
                    lead_id=paid,
                    producer_name="billing",
                ),
            )
            await publish(
                p,
                event(
                    "invoice.voided",
                    ev.InvoiceVoided(
                        invoice_id=invoices[2],
                        number="2031-000003",
                        reason="deal changed",
                        voided_at=DUE - timedelta(days=2),
                    ),
                    lead_id=voided,
                    producer_name="billing",
                ),
            )

        async with TopicReader(own_broker, topics.TASKS) as bus:
            # Six days after the due date: within the grace (7 days), nothing yet.
            await _advance(own_broker, days=0, hours=0, to=(DUE + timedelta(days=6)).isoformat())
            await eventually(lambda: _past(leads, DUE + timedelta(days=6)))
            flags = as_json(await leads.client.get(f"/leads/{unpaid}"))["red_flags"]
            assert "refuses_deposit" not in [f["name"] for f in flags]
            # Eight days after: flagged with the invoice as evidence, and a task for the owner.
            await _advance(own_broker, days=0, hours=0, to=(DUE + timedelta(days=8)).isoformat())

            async def flagged() -> list[dict]:
                found = as_json(await leads.client.get(f"/leads/{unpaid}"))["red_flags"]
                return [f for f in found if f["name"] == "refuses_deposit"]

            (flag,) = await eventually(flagged, timeout=30)
            assert "2031-000001" in flag["evidence"] and "8 days" in flag["evidence"] and flag["source"] == "billing"
            # (Nobody called these leads either: their first-touch escalations come too.)
            raised = await bus.wait_for("task.raised", lead_id=unpaid, count=2, timeout=30)
            (task,) = [e for e in raised if e.data["kind"] == "deposit_unpaid"]
            assert "2031-000001" in task.data["detail"]
        for lead_id in (paid, voided):
            others = as_json(await leads.client.get(f"/leads/{lead_id}"))["red_flags"]
            assert "refuses_deposit" not in [f["name"] for f in others]


async def _past(leads, moment: datetime) -> bool:
    return leads.runtime.clock.now() >= moment

"""Billing applies a batch of won deals in a few statements (its prefetch, the accounts and
deals it remembers, the invoice counter read once per transaction) and ends exactly where
applying the same events one by one ends, with the same gapless invoice numbers."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import workloads
from services.billing import invoices, payments, projects
from services.billing.api import invoice_out
from services.billing.app import MIGRATIONS, create_app
from services.billing.schemas import PaymentIn
from services.billing.settings import Settings
from services.billing.store import Base, Invoice
from shared import events as ev
from shared.clock import SimulatedClock
from shared.consumer import BatchConsumer
from shared.db import create_engine, statement_log
from shared.events import Envelope, make_event, topic_of
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory
from tests.support import consumer_record, database_state, same_row_ids
from tests.unit.test_outbox_inbox import FakeDeadLetters

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def record(value: bytes, topic: str, offset: int) -> ConsumerRecord:
    return consumer_record(value, topic=topic, offset=offset)


def records(envelopes: list[Envelope]) -> list[ConsumerRecord]:
    return [record(e.model_dump_json().encode(), topic_of(e.type), i) for i, e in enumerate(envelopes)]


async def consumer_on(url: str, tmp_path: Path) -> tuple[BatchConsumer, AsyncEngine, FakeDeadLetters]:
    """Billing's own consumer (its handlers and prefetch), on a migrated database, no broker."""
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    app = create_app(Settings(database_url=url, data_dir=tmp_path), engine=engine, clock=SimulatedClock(T0))
    consumer: BatchConsumer = app.state.runtime._consumer
    dead = FakeDeadLetters()
    consumer.dead_letters = dead  # type: ignore[assignment]
    return consumer, engine, dead


async def test_the_benchmark_batch_costs_about_two_statements_per_event(tmp_path: Path) -> None:
    """A won deal once cost 12.5 statements: the deal and account read per event (each read
    flushing what came before), the account inserted then updated, the invoice counter
    created, read and written per invoice."""
    consumer, engine, _ = await consumer_on(f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", tmp_path)
    batch = [record(m.value, m.topic, i) for i, m in enumerate(workloads.for_billing(400, random.Random(7)))]
    counted = statement_log(engine)
    await consumer.handle(batch)
    statements = list(counted)
    async with engine.connect() as conn:
        numbers = list(await conn.scalars(select(Invoice.number).order_by(Invoice.number)))
    await engine.dispose()
    assert numbers == [f"{T0.year}-{n:06d}" for n in range(1, 401)]
    # SQLite inserts outbox rows and invoice lines one by one (it cannot return the generated
    # ids of a multi-row insert in order): 800; everything else is a few statements per table.
    assert len(statements) / len(batch) < 2.1, statements[:20]
    # The inbox, accounts, deals and the counter (twice: the year's first invoice creates it).
    # and the people's keys (the invoices' line descriptions are sealed with them).
    assert sum(1 for s in statements if s.startswith("SELECT")) == 6
    assert sum(1 for s in statements if "invoice_counters" in s) == 4


def won(
    lead_id: uuid.UUID | None,
    deal_id: uuid.UUID,
    *,
    kind: str = "project",
    share: str = "0.3",
    signed_by: str = "Ada",
    tier: str | None = None,
) -> Envelope:
    retainer = kind == "retainer"
    payload = ev.DealWon(
        deal_id=deal_id,
        title=f"{kind} {deal_id.hex[:4]}",
        kind=kind,
        currency="EUR",
        total=Decimal(3000),
        monthly_fee=Decimal(1200) if retainer else None,
        included_hours=Decimal(10) if retainer else None,
        hourly_rate=Decimal(90) if retainer else None,
        signed_by=signed_by,
        signed_at=T0,
        deposit_share=Decimal(share),
        tier=tier,
    )
    return make_event("deal.won", payload, producer="leads", occurred_at=T0, lead_id=lead_id)


def about(event_type: str, payload: ev.Payload, lead_id: uuid.UUID | None) -> Envelope:
    return make_event(event_type, payload, producer="test", occurred_at=T0, lead_id=lead_id)


def story() -> tuple[list[Envelope], list[Envelope]]:
    """A first batch (an account and a deal that exist before), then one that touches them and
    new ones: a deal won twice (the same event, and a new event for it), a client's second deal
    and tier in the same batch, an erased client, a deposit of nothing that clears at once."""
    known, fresh, erased, free = (uuid.uuid4() for _ in range(4))
    old_deal, twice = uuid.uuid4(), uuid.uuid4()
    before = [
        won(known, old_deal, kind="retainer"),
        about("client.tier_changed", ev.ClientTierChanged(from_tier=None, to_tier="best"), erased),
    ]
    first = won(fresh, twice, kind="retainer", tier="good")
    batch = [
        before[0],  # redelivered: applied already
        won(known, old_deal, signed_by="Someone else"),  # a new event for a deal billing knows
        first,
        first,  # the same event twice in one batch
        won(fresh, twice, signed_by="Again"),  # a new event for a deal won earlier in this batch
        won(fresh, uuid.uuid4(), signed_by="Bea"),  # the client's second deal: its account is pending
        about("client.tier_changed", ev.ClientTierChanged(from_tier="good", to_tier="fire"), fresh),
        about("takeover.started", ev.TakeoverStarted(by="founder"), fresh),
        about("lead.erased", ev.LeadErased(requested_at=T0), erased),
        won(erased, uuid.uuid4(), signed_by="Must not be kept"),
        won(free, uuid.uuid4(), kind="retainer", share="0"),  # clears at once, the retainer starts
        won(known, uuid.uuid4(), kind="retainer"),
    ]
    return before, batch


def sequential_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids the handlers make, the same in every run (events keep their random ids)."""
    counter = itertools.count(1)
    same_row_ids(monkeypatch, lambda: uuid.UUID(int=next(counter)))


async def state(engine: AsyncEngine) -> dict[str, Any]:
    return await database_state(engine, Base.metadata)


async def run(
    url: str, tmp_path: Path, before: list[Envelope], batches: list[list[Envelope]]
) -> tuple[dict[str, Any], list[tuple[int, str, int]]]:
    consumer, engine, dead = await consumer_on(url, tmp_path)
    await consumer.handle(records(before))
    for batch in batches:
        await consumer.handle(records(batch))
    result = await state(engine)
    await engine.dispose()
    return result, dead.sent


@pytest.fixture
def two_databases(database_factory: Any) -> tuple[str, str]:
    """Made before the test's loop runs (the factory creates PostgreSQL databases with its own)."""
    return database_factory("first"), database_factory("second")


async def test_a_batch_ends_where_its_events_applied_one_by_one_end(
    two_databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, batch = story()
    sequential_ids(monkeypatch)
    together, _ = await run(two_databases[0], tmp_path, before, [batch])
    sequential_ids(monkeypatch)
    alone, _ = await run(two_databases[1], tmp_path, before, [[e] for e in batch])
    assert len(together["deals"]) == 6 and len(together["subscriptions"]) == 4
    assert len(together["invoices"]) == 7  # six deposits and the started retainer's first period
    assert any(e[0] == "deposit.cleared" for e in together["outbox"])
    assert "Must not be kept" not in repr(together) and "Again" not in repr(together)
    for table in alone:
        assert together[table] == alone[table], table


async def test_a_failed_batch_applied_one_by_one_ends_the_same(
    two_databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison event fails the batch after its prefetch and after invoices took numbers; the
    retry, event by event, starts from nothing the failed transaction read or counted."""
    before, batch = story()
    poison = won(None, uuid.uuid4())  # no lead: refused
    sequential_ids(monkeypatch)
    poisoned, dead_letters = await run(two_databases[0], tmp_path, before, [[*batch[:6], poison, *batch[6:]]])
    sequential_ids(monkeypatch)
    clean, _ = await run(two_databases[1], tmp_path, before, [batch])
    assert [reason for _, reason, _ in dead_letters] == ["rejected"]
    # The failed attempt made ids too: compare what the rows say, not which ids they got.
    assert made_ids_hidden(poisoned) == made_ids_hidden(clean)


def made_ids_hidden(found: dict[str, Any]) -> dict[str, list[str]]:
    made = re.compile(r"00000000-0000-0000-0000-[0-9a-f]{12}")
    return {table: sorted(made.sub("<id>", repr(row)) for row in rows) for table, rows in found.items()}


async def test_racing_transactions_share_no_number_and_leave_no_gap(database_url: str) -> None:
    """The counter is read once per transaction, but locked until it commits: transactions that
    issue several invoices at once, some rolled back, still number 1..n without a gap."""
    url = database_url
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    uow = UnitOfWorkFactory(engine, producer="billing", clock=SimulatedClock(T0))

    class Boom(Exception):
        pass

    async def issue(count: int, *, fail: bool) -> None:
        async with uow() as tx:
            for _ in range(count):
                await invoices.issue_invoice(
                    tx,
                    lead_id=uuid.uuid4(),
                    kind="deposit",
                    currency="EUR",
                    lines=[ev.InvoiceLine(description="Deposit", amount=Decimal(10))],
                    due_in_days=7,
                )
                await asyncio.sleep(0)
            if fail:
                raise Boom

    outcomes = await asyncio.gather(*(issue(3, fail=i % 4 == 3) for i in range(12)), return_exceptions=True)
    assert sum(isinstance(o, Boom) for o in outcomes) == 3
    assert not [o for o in outcomes if o is not None and not isinstance(o, Boom)]
    async with engine.connect() as conn:
        numbers = list(await conn.scalars(select(Invoice.number).order_by(Invoice.number)))
    await engine.dispose()
    assert numbers == [f"{T0.year}-{n:06d}" for n in range(1, 28)]


async def test_a_deposit_payment_reads_each_row_once(tmp_path: Path) -> None:
    """Paying a retainer's deposit (POST /payments' use case) cost 27 statements: the invoice's
    lines read, the deal's deposit invoice and its lines read again, the invoice counter created
    each time, the client's (absent) credit balance looked for three times."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'pay.db'}"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    app = create_app(Settings(database_url=url, data_dir=tmp_path), engine=engine, clock=SimulatedClock(T0))
    uow: UnitOfWorkFactory = app.state.runtime.uow
    lead_id = uuid.uuid4()
    await app.state.runtime._consumer.handle(records([won(lead_id, uuid.uuid4(), kind="retainer")]))
    async with uow() as tx:
        deposit = (await invoices.list_invoices(tx, lead_id=lead_id, status=None, limit=5, offset=0))[0][0]
    counted = statement_log(engine)
    async with uow() as tx:
        out = await payments.record_payment(
            tx,
            app.state.billing,
            PaymentIn(invoice_id=deposit.id, amount=deposit.amount, currency="EUR", method="bank_transfer"),
        )
    statements = list(counted)
    await engine.dispose()
    assert out.invoice_status == "paid"
    assert not [s for s in statements if s.startswith("SELECT invoice_lines")]
    assert len([s for s in statements if s.startswith("SELECT invoices")]) == 1
    assert len([s for s in statements if "invoice_counters" in s]) == 2  # read once, written once
    # Looked for once: known absent afterwards.
    assert len([s for s in statements if s.startswith("SELECT credit_balances")]) == 1
    assert len(statements) <= 21, statements


async def test_an_invoice_paid_from_credit_as_it_is_issued_still_shows_its_lines(tmp_path: Path) -> None:
    """The payment no longer loads an invoice's lines; one it pays from the client's credit the
    moment it is issued (a milestone here) keeps the lines it was issued with in the answer."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'credit.db'}"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    app = create_app(Settings(database_url=url, data_dir=tmp_path), engine=engine, clock=SimulatedClock(T0))
    uow: UnitOfWorkFactory = app.state.runtime.uow
    lead_id, deal_id = uuid.uuid4(), uuid.uuid4()
    await app.state.runtime._consumer.handle(records([won(lead_id, deal_id)]))
    async with uow() as tx:
        deposit = (await invoices.list_invoices(tx, lead_id=lead_id, status=None, limit=5, offset=0))[0][0]
        surplus = PaymentIn(invoice_id=deposit.id, amount=deposit.amount + 100, currency="EUR", method="cash")
        await payments.record_payment(tx, app.state.billing, surplus)
    async with uow() as tx:
        invoice, _ = await projects.invoice_project(
            tx, app.state.billing, deal_id=deal_id, kind="milestone", amount=Decimal(500), description=None
        )
        shown = invoice_out(invoice)
    await engine.dispose()
    assert (shown.amount_paid, shown.amount_due) == (Decimal("100.00"), Decimal("400.00"))
    assert [line.description for line in shown.lines] == ["Milestone: project " + deal_id.hex[:4]]

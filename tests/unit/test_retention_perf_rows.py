"""Retention's faster paths behave as the ones they replaced: timeline and money rows written
in one executemany per table where the ORM flushed them (read back in the transaction, never
written after a rollback), and gauges refreshed at most once a second yet never stale for a
scrape."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bench import workloads
from services.retention import metrics as metrics_module
from services.retention import record
from services.retention.app import MIGRATIONS
from services.retention.metrics import RetentionMetrics
from services.retention.store import ClientEvent, ClientMoney, LoyaltyAward
from shared.clock import SimulatedClock
from shared.db import create_engine, statement_log
from shared.migrations import upgrade_async
from shared.uow import REQUEST_TRANSACTION, RequestTransaction, UnitOfWorkFactory
from tests.support import eventually
from tests.unit.test_retention_batching import consumer_on
from tests.unit.test_retention_batching import record as consumer_record

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def uow(tmp_path) -> AsyncIterator[UnitOfWorkFactory]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    yield UnitOfWorkFactory(engine, producer="retention", clock=SimulatedClock(T0))
    await engine.dispose()


async def timeline_of(uow: UnitOfWorkFactory, lead_id: uuid.UUID) -> list[str]:
    async with uow() as tx:
        query = select(ClientEvent.type).where(ClientEvent.lead_id == lead_id).order_by(ClientEvent.id)
        return list(await tx.session.scalars(query))


async def money_of(uow: UnitOfWorkFactory, lead_id: uuid.UUID) -> dict[tuple[str, str], Decimal]:
    async with uow() as tx:
        rows = await tx.session.execute(
            select(ClientMoney.measure, ClientMoney.currency, ClientMoney.amount).where(ClientMoney.lead_id == lead_id)
        )
        return {(measure, currency): amount for measure, currency, amount in rows}


async def test_new_rows_are_read_back_in_their_transaction_and_committed(uow) -> None:
    lead_id, invoice_id = uuid.uuid4(), uuid.uuid4()
    async with uow() as tx:
        client = await record.client(tx, lead_id)
        record.timeline(tx, client, "payment.succeeded", invoice_id=invoice_id, amount=Decimal(10), currency="EUR")
        await record.add_money(tx, lead_id, measure="revenue", amount=Decimal(10), currency="EUR")
        await record.add_money(tx, lead_id, measure="revenue", amount=Decimal(2), currency="EUR")
        # A query of the transaction reads them, as it read the rows the ORM's autoflush wrote.
        assert await record.revenue_of(tx, lead_id) == {"EUR": Decimal(12)}
        count = select(func.count()).select_from(ClientEvent).where(ClientEvent.lead_id == lead_id)
        assert await tx.session.scalar(count) == 1
        # Written already: adding to it changes the written row.
        await record.add_money(tx, lead_id, measure="revenue", amount=Decimal(5), currency="EUR")
        await record.add_money(tx, lead_id, measure="won", amount=Decimal(7), currency="GBP")
        record.timeline(tx, client, "invoice.issued", kind="monthly", amount=Decimal(5), currency="EUR")
    assert await timeline_of(uow, lead_id) == ["payment.succeeded", "invoice.issued"]
    assert await money_of(uow, lead_id) == {("revenue", "EUR"): Decimal(17), ("won", "GBP"): Decimal(7)}
    async with uow() as tx:
        assert await record.payment_details(tx, lead_id) == [
            {"invoice_id": str(invoice_id), "amount": "10", "currency": "EUR"}
        ]


async def test_a_new_award_is_changed_before_and_after_it_is_written(uow) -> None:
    lead_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with uow() as tx:
        await record.client(tx, lead_id)
        for invoice_id in (first, second):
            record.add_award(tx, invoice_id=invoice_id, lead_id=lead_id, amount=Decimal(9), currency="EUR", due_at=T0)
        pending = await record.award(tx, first)
        assert pending is not None and pending.status == "pending"
        pending.status = "voided"
        assert await tx.session.scalar(select(func.count()).select_from(LoyaltyAward)) == 2
        written = await record.award(tx, second)
        assert isinstance(written, LoyaltyAward) and written.status == "pending"
        written.status, written.points = "awarded", 9
    async with uow() as tx:
        rows = await tx.session.execute(select(LoyaltyAward.invoice_id, LoyaltyAward.status, LoyaltyAward.points))
        assert set(rows) == {(first, "voided", 0), (second, "awarded", 9)}


async def test_rows_of_a_rolled_back_transaction_are_never_written(uow) -> None:
    lead_id = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with uow() as tx:
            client = await record.client(tx, lead_id)
            record.timeline(tx, client, "deal.won", value=Decimal(1), currency="EUR")
            await record.add_money(tx, lead_id, measure="won", amount=Decimal(1), currency="EUR")
            raise RuntimeError("boom")
    assert await timeline_of(uow, lead_id) == []
    assert await money_of(uow, lead_id) == {}


async def test_a_savepoint_rolled_back_in_a_request_takes_its_rows_with_it(uow) -> None:
    """Units of work of an HTTP request share its transaction, each as a savepoint."""
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    request = RequestTransaction(uow.sessions, uow.sessions())
    await request.session.begin()
    token = REQUEST_TRANSACTION.set(request)
    try:
        async with uow() as tx:
            client = await record.client(tx, kept)
            record.timeline(tx, client, "deal.won", value=Decimal(1), currency="EUR")
            await record.add_money(tx, kept, measure="won", amount=Decimal(1), currency="EUR")
        with pytest.raises(RuntimeError):
            async with uow() as tx:
                client = await record.client(tx, dropped)
                record.timeline(tx, client, "deal.won", value=Decimal(2), currency="EUR")
                await record.add_money(tx, dropped, measure="won", amount=Decimal(2), currency="EUR")
                raise RuntimeError("boom")
    finally:
        REQUEST_TRANSACTION.reset(token)
    await request.session.commit()
    await request.session.close()
    assert await timeline_of(uow, kept) == ["deal.won"]
    assert await money_of(uow, kept) == {("won", "EUR"): Decimal(1)}
    assert await timeline_of(uow, dropped) == []
    assert await money_of(uow, dropped) == {}


async def test_the_benchmark_batch_costs_a_handful_of_statements(tmp_path) -> None:
    """Timeline rows were inserted one by one (three quarters of the statements)."""
    consumer, engine, _ = await consumer_on(f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", tmp_path)
    messages = workloads.for_retention(400, random.Random(7))
    statements = statement_log(engine)
    await consumer.handle([consumer_record(m.value, m.topic, i) for i, m in enumerate(messages)])
    await engine.dispose()
    assert len(statements) <= 12, statements
    assert sum(1 for s in statements if s.startswith("INSERT INTO client_events")) == 1


async def good_clients(uow: UnitOfWorkFactory, n: int) -> None:
    async with uow() as tx:
        for _ in range(n):
            client = await record.client(tx, uuid.uuid4())
            client.became_client_at, client.tier, client.band = T0, "good", "green"


async def test_gauges_refresh_at_most_once_a_period_yet_a_scrape_is_never_stale(uow, monkeypatch) -> None:
    monkeypatch.setattr(metrics_module, "REFRESH_EVERY_S", 0.3)
    registry = CollectorRegistry()
    metrics = RetentionMetrics(registry, uow.sessions)
    refreshes = 0
    count = metrics._refresh

    async def counted(session: AsyncSession) -> None:
        nonlocal refreshes
        refreshes += 1
        await count(session)

    monkeypatch.setattr(metrics, "_refresh", counted)

    def good() -> float | None:
        return registry.get_sample_value("clientflow_retention_clients_by_tier", {"tier": "good"})

    async def settled() -> bool:
        return not metrics._scheduled

    async def settle() -> None:
        await eventually(settled, timeout=5, interval=0.01)

    await good_clients(uow, 1)
    metrics.request_refresh()  # the first change is counted at once
    await settle()
    assert (good(), refreshes) == (1, 1)

    for _ in range(20):  # a burst of commits: one refresh for all of them, a period later
        await good_clients(uow, 1)
        metrics.request_refresh()
    assert (good(), refreshes) == (1, 1)
    await settle()
    assert (good(), refreshes) == (21, 2)

    await good_clients(uow, 2)
    metrics.request_refresh()
    await metrics.before_scrape()  # a scrape does not wait for the period
    assert (good(), refreshes) == (23, 3)
    await settle()
    assert refreshes == 3  # nothing changed since the scrape
    await metrics.before_scrape()
    assert refreshes == 3


async def test_mrr_summed_in_sql_is_the_rule_exactly(database_url: str) -> None:
    """The MRR gauge's SQL sum (whole ten-thousandths on SQLite, NUMERIC on PostgreSQL) gives
    what ``domain.mrr_by_currency`` gives from every subscription, to the last decimal."""
    from decimal import Decimal as D

    from services.retention import domain
    from services.retention.metrics import _mrr
    from services.retention.store import Subscription

    await upgrade_async(MIGRATIONS, database_url)
    engine = create_engine(database_url)
    uow = UnitOfWorkFactory(engine, producer="retention", clock=SimulatedClock(T0))
    fees = [
        ("active", D("0.29"), "EUR"),  # 0.29 * 10000 is 2899.999... as a float
        ("active", D("0.1"), "EUR"),
        ("active", D("0.2"), "EUR"),
        ("active", D("1234.5678"), "EUR"),
        ("active", D("999999999.99"), "USD"),
        ("active", D("0.01"), "USD"),
        ("active", D("1500"), "NOK"),
        ("paused", D("700"), "NOK"),  # paused is not MRR
        ("cancelled", D("50"), "EUR"),
        ("active", None, "EUR"),  # its start went astray: no fee known
        ("active", D("80"), None),
    ]
    try:
        async with uow() as tx:
            for values in fees:
                client = await record.client(tx, uuid.uuid4())
                row = dict(zip(("status", "monthly_fee", "currency"), values, strict=True))
                tx.session.add(Subscription(id=uuid.uuid4(), lead_id=client.lead_id, updated_at=T0, **row))
        async with uow.sessions() as session:
            summed = await _mrr(session)
        expected = domain.mrr_by_currency(domain.SubscriptionView(s, f, c) for s, f, c in fees)
        assert summed == expected == {"EUR": D("1235.1578"), "NOK": D("1500"), "USD": D("1000000000.00")}
        assert {c: float(v) for c, v in summed.items()} == {c: float(v) for c, v in expected.items()}
    finally:
        await engine.dispose()

"""Won deals are written as rows in bulk (``record.insert_later``) just before the session next
speaks to the database: what a later event of the same batch reads or changes of them, it
finds, and a batch still ends where its events applied one by one end. The report's figures,
added up from grouped values, are the ones a row-by-row pass gives."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from services.billing import domain, invoices, record, reports
from services.billing.app import MIGRATIONS
from services.billing.context import Billing
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings
from services.billing.store import Account, Deal, Invoice, InvoiceLine, Subscription
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import create_engine
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory
from tests.unit.test_billing_batching import T0, about, run, sequential_ids, two_databases, won

__all__ = ["two_databases"]  # the fixture, for the tests below


def later_in_the_batch() -> tuple[list[Any], list[Any]]:
    """Events that touch, later in the same batch, the rows a won deal wrote: the retainer
    cancelled, the deal's client erased, a change asked on the deal, the client's tier set."""
    cancelled, erased, changed, tiered = (uuid.uuid4() for _ in range(4))
    changed_deal = uuid.uuid4()
    batch = [
        won(cancelled, uuid.uuid4(), kind="retainer"),
        won(erased, uuid.uuid4(), signed_by="Erased Person"),
        won(changed, changed_deal),
        won(tiered, uuid.uuid4(), kind="retainer"),
        about(
            "cancellation.completed",
            ev.CancellationCompleted(cancellation_id=uuid.uuid4(), reason="budget", effective_at=T0),
            cancelled,
        ),
        about("lead.erased", ev.LeadErased(requested_at=T0), erased),
        about(
            "deal.change_requested",
            ev.DealChangeRequested(
                deal_id=changed_deal,
                request_id=uuid.uuid4(),
                description="Another page",
                in_scope=False,
                hours=Decimal(4),
                amount=Decimal(400),
                currency="EUR",
            ),
            changed,
        ),
        about("client.tier_changed", ev.ClientTierChanged(from_tier=None, to_tier="best"), tiered),
        won(tiered, uuid.uuid4(), signed_by="Second deal"),  # the account, written by now
    ]
    return [], batch


async def test_later_events_of_a_batch_find_the_rows_a_won_deal_wrote(
    two_databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, batch = later_in_the_batch()
    sequential_ids(monkeypatch)
    together, _ = await run(two_databases[0], tmp_path, before, [batch])
    sequential_ids(monkeypatch)
    alone, _ = await run(two_databases[1], tmp_path, before, [[e] for e in batch])
    assert "Erased Person" not in repr(together["deals"]) and "Erased Person" not in repr(together["accounts"])
    assert any("'status': 'cancelled'" in row for row in together["subscriptions"])
    assert len(together["change_orders"]) == 1
    assert any("'tier': 'best'" in row and "Second deal" in row for row in together["accounts"])
    # The outbox is left out: a person erased later in the batch has the personal fields of
    # every event of the batch about them stripped at the commit (shared sealing), where one
    # by one the events before the erasure were sealed with the key then destroyed.
    for table in set(alone) - {"outbox"}:
        assert together[table] == alone[table], table
    assert [e[:2] for e in together["outbox"]] == [e[:2] for e in alone["outbox"]]


async def uow_on(url: str) -> UnitOfWorkFactory:
    await upgrade_async(MIGRATIONS, url)
    return UnitOfWorkFactory(create_engine(url), producer="billing", clock=SimulatedClock(T0))


def account_row(lead_id: uuid.UUID) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "contact_name": "Ada",
        "created_at": T0,
        "updated_at": T0,
        "erased_at": None,
        "tier": None,
        "takeover_since": None,
        "account_id": None,
    }


async def test_waiting_rows_are_written_before_a_read_and_dropped_with_a_rollback(database_url: str) -> None:
    uow = await uow_on(database_url)
    kept, dropped = uuid.uuid4(), uuid.uuid4()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with uow() as tx:
            await record.insert_later(tx, Account, [account_row(dropped)])
            assert await tx.session.scalar(select(func.count()).select_from(Account)) == 1
            raise Boom
    async with uow() as tx:
        await record.insert_later(tx, Account, [account_row(kept)])
    async with uow() as tx:
        assert list(await tx.session.scalars(select(Account.lead_id))) == [kept]
    await uow.engine.dispose()


async def test_a_known_row_is_found_as_an_object_before_and_after_it_is_written(database_url: str) -> None:
    """Changed through the object ``get_known`` gives, the row ends as changed: pending while
    it waits, persistent (an UPDATE, no second INSERT) once it was written."""
    uow = await uow_on(database_url)
    waiting, written = uuid.uuid4(), uuid.uuid4()
    async with uow() as tx:
        await record.insert_account_later(tx, account_row(waiting))
        await record.insert_account_later(tx, account_row(written))
        await tx.session.execute(select(Deal.deal_id).limit(1))  # any statement writes what waits
        for lead_id in (waiting, written):
            account = await record.get_known(tx, Account, lead_id)
            assert account is not None and account.contact_name == "Ada"
            account.tier = "best"
    async with uow() as tx:
        rows = (await tx.session.execute(select(Account.lead_id, Account.tier))).all()
        assert sorted(rows) == sorted([(waiting, "best"), (written, "best")])
    await uow.engine.dispose()


async def test_inside_a_savepoint_rows_are_written_at_once(database_url: str) -> None:
    uow = await uow_on(database_url)
    lead_id = uuid.uuid4()
    async with uow() as tx:
        savepoint = await tx.session.begin_nested()
        await record.insert_later(tx, Account, [account_row(lead_id)])
        await savepoint.rollback()
        assert await tx.session.scalar(select(func.count()).select_from(Account)) == 0
    await uow.engine.dispose()


async def test_rows_issued_in_bulk_match_an_invoice_issued_as_an_object(database_url: str) -> None:
    uow = await uow_on(database_url)
    lead_id = uuid.uuid4()
    lines = [ev.InvoiceLine(description="Deposit", amount=Decimal("120.50"))]
    async with uow() as tx:
        as_object = await invoices.issue_invoice(
            tx, lead_id=lead_id, kind="deposit", currency="EUR", lines=lines, due_in_days=7
        )
        as_rows = await invoices.issue_invoice_rows(
            tx, lead_id=lead_id, kind="deposit", currency="EUR", lines=lines, due_in_days=7
        )
        emitted = [e.data for e in tx.emitted]
    async with uow() as tx:
        found = {i.id: i for i in await tx.session.scalars(select(Invoice))}
        line_rows = (await tx.session.execute(select(InvoiceLine).order_by(InvoiceLine.id))).scalars().all()
    skip = {"id", "number"}
    first, second = found[as_object.id], found[as_rows["id"]]
    columns = [c.key for c in Invoice.__table__.columns if c.key not in skip]
    assert [getattr(first, c) for c in columns] == [getattr(second, c) for c in columns]
    assert (first.number, second.number) == (f"{T0.year}-000001", f"{T0.year}-000002")
    assert [(line.invoice_id, line.position, line.amount) for line in line_rows] == [
        (first.id, 1, Decimal("120.50")),
        (second.id, 1, Decimal("120.50")),
    ]
    assert [{k: v for k, v in e.items() if k not in {"invoice_id", "number"}} for e in emitted] == [
        {k: v for k, v in emitted[0].items() if k not in {"invoice_id", "number"}}
    ] * 2
    await uow.engine.dispose()


async def test_the_report_adds_up_grouped_values_as_a_row_by_row_pass_would(database_url: str) -> None:
    uow = await uow_on(database_url)
    ctx = Billing(settings=Settings(), metrics=BillingMetrics(CollectorRegistry()))
    amounts = ["100", "100", "250.10", "100", "0.05", "999999.99"]
    async with uow() as tx:
        for n, amount in enumerate(amounts):
            await invoices.issue_invoice(
                tx,
                lead_id=uuid.uuid4(),
                kind="deposit",
                currency="EUR" if n % 2 else "USD",
                lines=[ev.InvoiceLine(description="Deposit", amount=Decimal(amount))],
                due_in_days=3 if n % 3 else 30,
            )
        for n, status in enumerate(["active", "active", "pending", "paused", "active"]):
            tx.session.add(
                Subscription(
                    id=uuid.uuid4(),
                    lead_id=uuid.uuid4(),
                    deal_id=uuid.uuid4(),
                    status=status,
                    currency="EUR",
                    monthly_fee=Decimal("1200.00") if n < 2 else Decimal("850.55"),
                    included_hours=None,
                    hourly_rate=None,
                    created_at=T0,
                    updated_at=T0,
                )
            )
    uow.clock.advance_to(T0 + timedelta(days=10))
    async with uow() as tx:
        figures = await reports.summary(tx, ctx)
        rows = (await tx.session.execute(select(Invoice))).scalars().all()
        subs = (await tx.session.execute(select(Subscription))).scalars().all()
    receivables: dict[str, Decimal] = defaultdict(Decimal)
    for i in rows:
        receivables[i.currency] += domain.amount_open(i.amount, i.amount_paid, i.amount_credited)
    assert figures["receivables"] == {c: Decimal(v).quantize(Decimal("0.01")) for c, v in receivables.items()}
    assert figures["invoices_overdue"] == sum(1 for i in rows if i.due_at < uow.clock.now())
    assert figures["subscriptions"] == {"active": 3, "pending": 1, "paused": 1}
    assert figures["mrr"] == {"EUR": sum((s.monthly_fee for s in subs if s.status == "active"), Decimal(0))}
    assert set(figures["days_sales_outstanding"]) == {"EUR", "USD"}
    await uow.engine.dispose()

"""Invoice numbering and immutability through the use case, on a throwaway SQLite file (no broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.billing import invoices
from services.billing.store import Base, ImmutableInvoice, Invoice
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import PlumbingBase, create_engine
from shared.uow import UnitOfWorkFactory


@pytest.fixture
async def uow(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
        await connection.run_sync(Base.metadata.create_all)
    factory = UnitOfWorkFactory(
        engine, producer="billing", clock=SimulatedClock(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    )
    yield factory
    await engine.dispose()


async def issue(uow: UnitOfWorkFactory, amount: str = "100") -> Invoice:
    async with uow() as tx:
        return await invoices.issue_invoice(
            tx,
            lead_id=uuid.uuid4(),
            kind="deposit",
            currency="EUR",
            lines=[ev.InvoiceLine(description="Deposit", amount=Decimal(amount))],
            due_in_days=7,
        )


class Boom(Exception):
    pass


async def test_numbers_have_no_gaps_across_rollbacks_and_restart_each_year(uow: UnitOfWorkFactory) -> None:
    numbers = [(await issue(uow)).number for _ in range(2)]
    with pytest.raises(Boom):
        async with uow() as tx:
            await invoices.issue_invoice(
                tx, lead_id=uuid.uuid4(), kind="deposit", currency="EUR", lines=[], due_in_days=7
            )
            raise Boom  # the invoice and its number roll back together
    numbers.append((await issue(uow)).number)
    assert numbers == ["2026-000001", "2026-000002", "2026-000003"]

    uow.clock.advance_to(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert (await issue(uow)).number == "2027-000001"
    assert (await issue(uow)).number == "2027-000002"


async def test_an_issued_invoice_cannot_be_rewritten(uow: UnitOfWorkFactory) -> None:
    issued = await issue(uow, "250.50")
    with pytest.raises(ImmutableInvoice, match="amount"):
        async with uow() as tx:
            invoice = await tx.session.get(Invoice, issued.id)
            invoice.amount = Decimal("1")
    with pytest.raises(ImmutableInvoice):
        async with uow() as tx:
            invoice = await tx.session.get(Invoice, issued.id)
            invoice.lines[0].description = "something else"
    # Its payment state is not what it says to the client, and may change.
    async with uow() as tx:
        invoice = await tx.session.get(Invoice, issued.id)
        invoice.amount_paid = Decimal("50.00")
    async with uow() as tx:
        invoice = await tx.session.get(Invoice, issued.id)
        assert (invoice.amount, invoice.amount_paid, invoice.currency) == (Decimal("250.50"), Decimal("50.00"), "EUR")
        assert invoice.lines[0].description == "Deposit"

"""Export on request (``export.requested``): billing's part of everything held about a person
(``services/leads/exports.py`` gathers the rest)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from services.billing.store import (
    Account,
    BilledPeriod,
    ChangeOrder,
    CreditBalance,
    CreditNote,
    Deal,
    DunningCase,
    Invoice,
    Payment,
    ScheduledPrice,
    Subscription,
    Termination,
    TimeEntry,
    WriteOff,
)
from shared.exports import answer, audit_rows, row, rows
from shared.uow import UnitOfWork


async def export_person(tx: UnitOfWork, *, export_id: uuid.UUID, lead_id: uuid.UUID) -> None:
    """Answer an export with what billing holds about the person: the billing account, invoices
    with their lines, payments, credit notes and balances, deals with their deposits,
    subscriptions with their periods and price changes, hours, change orders, dunning,
    write-offs, terminations and the audit trail."""

    async def of(table: Any, *order: Any) -> list[Any]:
        return list(await tx.session.scalars(select(table).where(table.lead_id == lead_id).order_by(*order)))

    account = await tx.session.get(Account, lead_id)
    invoices = [
        {**row(invoice), "lines": rows(invoice.lines)} for invoice in await of(Invoice, Invoice.issued_at, Invoice.id)
    ]
    subscriptions = []
    for subscription in await of(Subscription, Subscription.created_at):
        periods = await tx.session.scalars(
            select(BilledPeriod)
            .where(BilledPeriod.subscription_id == subscription.id)
            .order_by(BilledPeriod.period_start)
        )
        prices = await tx.session.scalars(
            select(ScheduledPrice)
            .where(ScheduledPrice.subscription_id == subscription.id)
            .order_by(ScheduledPrice.effective_at)
        )
        subscriptions.append({**row(subscription), "billed_periods": rows(periods), "price_changes": rows(prices)})
    part = {
        "account": row(account) if account is not None else None,
        "invoices": invoices,
        "payments": rows(await of(Payment, Payment.received_at)),
        "credit_notes": rows(await of(CreditNote, CreditNote.issued_at)),
        "credit_balances": rows(await of(CreditBalance, CreditBalance.currency)),
        # A won deal as billing keeps it: its deposit (share, amount, invoice) and when it cleared.
        "deposits": rows(await of(Deal, Deal.created_at)),
        "subscriptions": subscriptions,
        "time_entries": rows(await of(TimeEntry, TimeEntry.worked_at)),
        "change_orders": rows(await of(ChangeOrder, ChangeOrder.created_at)),
        "dunning": rows(await of(DunningCase, DunningCase.opened_at)),
        "write_offs": rows(await of(WriteOff, WriteOff.written_off_at)),
        "terminations": rows(await of(Termination, Termination.created_at)),
        "audit": await audit_rows(tx, lead_id),
    }
    answer(tx, export_id=export_id, lead_id=lead_id, service="billing", part=part)

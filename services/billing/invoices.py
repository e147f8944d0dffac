"""Invoices: issuing one (with the year's next number), reading them, voiding one.

Each use case runs inside the caller's unit of work: state changes and the events they cause
commit together (the outbox), so nothing is announced that was not recorded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, NotRequired, TypedDict, Unpack

from sqlalchemy import func, select

from services.billing import domain, dunning, record, store
from services.billing.store import Account, Invoice, InvoiceLine, Payment
from shared import events as ev
from shared.errors import NotFound
from shared.ids import time_ordered_id
from shared.money import quantize
from shared.uow import UnitOfWork


class InvoiceTerms(TypedDict):
    """What an invoice is issued for (the rest, number, dates and status, follows from them)."""

    lead_id: uuid.UUID
    kind: str
    currency: str
    lines: list[ev.InvoiceLine]
    due_in_days: int
    deal_id: NotRequired[uuid.UUID | None]
    subscription_id: NotRequired[uuid.UUID | None]
    period: NotRequired[tuple[datetime, datetime] | None]
    hours_used: NotRequired[Decimal | None]
    included_hours: NotRequired[Decimal | None]


async def issue_invoice(tx: UnitOfWork, **terms: Unpack[InvoiceTerms]) -> Invoice:
    """Issue an invoice (``invoice.issued``) with the year's next number, taken in this same
    transaction so a rollback gives the number back. An invoice of nothing is paid at issue."""
    row, line_rows = await _issue(tx, terms)
    invoice = Invoice(**row, lines=[InvoiceLine(**line) for line in line_rows])
    tx.session.add(invoice)
    return invoice


async def issue_invoice_rows(tx: UnitOfWork, **terms: Unpack[InvoiceTerms]) -> dict[str, Any]:
    """``issue_invoice`` for the consumer's hot path: the same number, rows and event, the rows
    written in bulk with the batch's others (``record.insert_later``) instead of as objects.
    Returns the invoice's row."""
    row, line_rows = await _issue(tx, terms)
    await record.insert_later(tx, Invoice, [row])
    await record.insert_later(tx, InvoiceLine, [{"invoice_id": row["id"], **line} for line in line_rows])
    return row


async def _issue(tx: UnitOfWork, terms: InvoiceTerms) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Number the invoice and emit ``invoice.issued``; its row and its lines' rows to write."""
    lead_id, kind, currency, lines = terms["lead_id"], terms["kind"], terms["currency"], terms["lines"]
    deal_id, subscription_id = terms.get("deal_id"), terms.get("subscription_id")
    period = terms.get("period")
    now = tx.now()
    amount = quantize(sum((line.amount for line in lines), Decimal(0)))
    sequence = await store.next_invoice_sequence(tx.session, now.year, next_of=domain.next_sequence, memo=tx.memo)
    status = domain.invoice_status(amount=amount, amount_paid=Decimal("0.00"), voided=False)
    row: dict[str, Any] = {
        "id": time_ordered_id(),
        "number": domain.invoice_number(now.year, sequence),
        "lead_id": lead_id,
        "kind": kind,
        "deal_id": deal_id,
        "subscription_id": subscription_id,
        "currency": currency,
        "amount": amount,
        "amount_paid": Decimal("0.00"),
        "status": status,
        "issued_at": now,
        "due_at": domain.due_date(now, days=terms["due_in_days"]),
        "period_start": period[0] if period else None,
        "period_end": period[1] if period else None,
        "paid_at": now if status == "paid" else None,
    }
    line_rows = [
        {"position": i, "description": line.description, "quantity": line.quantity, "amount": line.amount}
        for i, line in enumerate(lines, start=1)
    ]
    tx.emit(
        "invoice.issued",
        ev.InvoiceIssued(
            invoice_id=row["id"],
            number=row["number"],
            kind=kind,
            deal_id=deal_id,
            subscription_id=subscription_id,
            amount=amount,
            currency=currency,
            issued_at=now,
            due_at=row["due_at"],
            lines=lines,
            hours_used=terms.get("hours_used"),
            included_hours=terms.get("included_hours"),
            period_start=row["period_start"],
            period_end=row["period_end"],
        ),
        lead_id=lead_id,
    )
    return row, line_rows


async def get_invoice(tx: UnitOfWork, invoice_id: uuid.UUID) -> Invoice:
    """One invoice with its lines; NotFound when there is none."""
    invoice = await tx.session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice


async def list_invoices(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    offset: int,
    account_id: uuid.UUID | None = None,
) -> tuple[list[Invoice], int]:
    """A client's invoices (or a company account's, or everyone's), in number order, one page of
    them and how many match."""
    query = select(Invoice)
    if lead_id is not None:
        query = query.where(Invoice.lead_id == lead_id)
    if account_id is not None:
        query = query.where(Invoice.lead_id.in_(select(Account.lead_id).where(Account.account_id == account_id)))
    if status is not None:
        query = query.where(Invoice.status == status)
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(query.order_by(Invoice.number).limit(limit).offset(offset))
    return list(rows), total or 0


async def invoice_payments(tx: UnitOfWork, invoice_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Payment]]:
    """The payments of each invoice, in the order they were received (one query for all)."""
    found: dict[uuid.UUID, list[Payment]] = {invoice_id: [] for invoice_id in invoice_ids}
    if invoice_ids:
        rows = await tx.session.scalars(
            select(Payment).where(Payment.invoice_id.in_(invoice_ids)).order_by(Payment.received_at, Payment.id)
        )
        for payment in rows:
            found[payment.invoice_id].append(payment)
    return found


async def void_invoice(tx: UnitOfWork, invoice_id: uuid.UUID, *, reason: str) -> Invoice:
    """Void an open invoice nothing was paid on. The invoice keeps its number and lines (the
    sequence keeps no gap); it only stops being payable. Voiding twice is a no-op."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    if invoice.status == "void":
        return invoice
    domain.void_check(status=invoice.status, amount_paid=invoice.amount_paid)
    invoice.status = "void"
    invoice.voided_at = tx.now()
    invoice.void_reason = reason
    await dunning.close_dunning(tx, invoice, reason="void")
    tx.emit(
        "invoice.voided",
        ev.InvoiceVoided(invoice_id=invoice.id, number=invoice.number, reason=reason, voided_at=invoice.voided_at),
        lead_id=invoice.lead_id,
    )
    return invoice

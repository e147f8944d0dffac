"""Payments and credit notes: money reaching an invoice (by hand, from the provider, from a
retry or from the client's credit), the client's credit balance, and corrections.

Each use case runs inside the caller's unit of work: state changes and the events they cause
commit together (the outbox).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import lazyload, raiseload

from services.billing import deposits, domain, dunning, record, store
from services.billing.context import Billing
from services.billing.store import CreditBalance, CreditNote, Deal, Invoice, Payment
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.ids import time_ordered_id
from shared.money import quantize
from shared.uow import UnitOfWork


class ManualPayment(Protocol):
    """What a payment recorded by hand says (the HTTP body has this shape)."""

    @property
    def invoice_id(self) -> uuid.UUID: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def reference(self) -> str | None: ...


@dataclass(frozen=True)
class PaymentReceipt:
    """What one payment did: how much went to the invoice, how much to the client's credit,
    and where the invoice and the balance stand now (amounts rounded to cents)."""

    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: str
    reference: str | None
    applied: Decimal
    credited: Decimal
    credit_balance: Decimal
    invoice_status: str
    amount_due: Decimal
    days_late: int
    paid_at: datetime


async def record_payment(tx: UnitOfWork, ctx: Billing, data: ManualPayment) -> PaymentReceipt:
    """Record money received against an invoice (``payment.succeeded``). Partial payments add
    up; a surplus is credited to the client's balance. The payment that settles a deposit
    clears it (``deposit.cleared``) and, for a retainer, starts the subscription."""
    return await apply_money(
        tx,
        ctx,
        invoice_id=data.invoice_id,
        amount=data.amount,
        currency=data.currency,
        method=data.method,
        reference=data.reference,
        source="manual",
    )


async def apply_money(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    invoice_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    method: str,
    reference: str | None,
    source: str,
    external_id: str | None = None,
) -> PaymentReceipt:
    """Money reached an invoice, from any source (manual, webhook, retry, credit balance)."""
    # Locked so two payments at once cannot both read the same amount already paid. A payment
    # never reads the lines: they are not loaded (that was a query per payment).
    invoice = await tx.session.scalar(
        select(Invoice).where(Invoice.id == invoice_id).with_for_update().options(raiseload(Invoice.lines))
    )
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    if external_id is not None:
        known = await tx.session.scalar(select(Payment).where(Payment.external_id == external_id))
        if known is not None:
            raise Conflict(f"payment {external_id} was already recorded (payment {known.id})")
    application = domain.apply_payment(
        # Credit notes lower what the invoice asks, as if that part were paid.
        invoice_amount=invoice.amount - invoice.amount_credited,
        invoice_currency=invoice.currency,
        already_paid=invoice.amount_paid,
        status=invoice.status,
        amount=amount,
        currency=currency,
    )
    now = tx.now()
    late = domain.days_late(due_at=invoice.due_at, paid_at=now)
    payment = Payment(
        id=time_ordered_id(),
        invoice_id=invoice.id,
        lead_id=invoice.lead_id,
        amount=amount,
        applied=application.applied,
        credited=application.credited,
        currency=currency,
        method=method,
        reference=reference,
        source=source,
        external_id=external_id,
        received_at=now,
        days_late=late,
    )
    tx.session.add(payment)
    invoice.amount_paid = application.amount_paid
    invoice.status = application.status
    if application.settles:
        invoice.paid_at = now
    balance = await record.credit(tx, lead_id=invoice.lead_id, currency=currency, amount=application.credited)
    tx.emit(
        "payment.succeeded",
        ev.PaymentSucceeded(
            payment_id=payment.id,
            invoice_id=invoice.id,
            amount=amount,
            currency=currency,
            method=method,
            reference=reference,
            paid_at=now,
            days_late=late,
            invoice_paid=application.status == "paid",
            applied=application.applied,
            credited=application.credited,
            invoice_kind=invoice.kind,
        ),
        lead_id=invoice.lead_id,
    )
    if application.settles:
        await settled(tx, ctx, invoice)
    return PaymentReceipt(
        payment_id=payment.id,
        invoice_id=invoice.id,
        amount=quantize(payment.amount),
        currency=payment.currency,
        method=payment.method,
        reference=payment.reference,
        applied=quantize(application.applied),
        credited=quantize(application.credited),
        credit_balance=quantize(balance),
        invoice_status=application.status,
        amount_due=quantize(application.amount_due),
        days_late=late,
        paid_at=now,
    )


async def settled(tx: UnitOfWork, ctx: Billing, invoice: Invoice) -> None:
    """An invoice is fully paid (or credited): its dunning ends, a deposit clears."""
    await dunning.close_dunning(tx, invoice, reason="paid")
    if invoice.kind == "deposit" and invoice.deal_id is not None:
        # Its deposit invoice is ``invoice``, in the session already: not selected again.
        deal = await tx.session.scalar(
            select(Deal)
            .where(Deal.deal_id == invoice.deal_id)
            .with_for_update()
            .options(lazyload(Deal.deposit_invoice))
        )
        if deal is not None:
            await deposits.clear_deposit(tx, ctx, deal=deal, invoice=invoice)


async def apply_credit_balance(tx: UnitOfWork, ctx: Billing, invoice: Invoice) -> None:
    """Spend the client's credit (same currency only) on a new invoice, as Stripe applies the
    customer balance to the next invoice."""
    if invoice.status != "open":
        return
    row = await record.credit_balance(tx, lead_id=invoice.lead_id, currency=invoice.currency)
    if row is None or row.balance <= 0:
        return
    row = await record.locked_credit_balance(tx, lead_id=invoice.lead_id, currency=invoice.currency)
    spend = min(row.balance, domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited))
    if spend <= 0:
        return
    row.balance -= spend
    row.updated_at = tx.now()
    await tx.session.flush()
    await apply_money(
        tx,
        ctx,
        invoice_id=invoice.id,
        amount=spend,
        currency=invoice.currency,
        method="credit_balance",
        reference=None,
        source="credit",
    )


async def credit_balances(tx: UnitOfWork, lead_id: uuid.UUID) -> list[CreditBalance]:
    """The client's credit per currency (never converted)."""
    rows = await tx.session.scalars(select(CreditBalance).where(CreditBalance.lead_id == lead_id))
    return list(rows)


# --------------------------------------------------------------------------- credit notes


async def issue_credit_note(
    tx: UnitOfWork, *, invoice_id: uuid.UUID, amount: Decimal, currency: str, reason: str, refund: bool
) -> CreditNote:
    """Correct an issued invoice without touching it (``credit_note.issued``): the credit
    first lowers what is still due; the paid part is refunded or kept as the client's credit."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    domain.credit_check(status=invoice.status, invoice_currency=invoice.currency, currency=currency)
    split = domain.split_credit(
        amount=amount,
        invoice_amount=invoice.amount,
        paid=invoice.amount_paid,
        credited_before=invoice.amount_credited,
        refund=refund,
    )
    now = tx.now()
    sequence = await store.next_credit_note_sequence(tx.session, now.year)
    note = CreditNote(
        id=time_ordered_id(),
        number=domain.credit_note_number(year=now.year, sequence=sequence),
        invoice_id=invoice.id,
        lead_id=invoice.lead_id,
        currency=invoice.currency,
        amount=amount,
        reduces_due=split.reduces_due,
        refunded=split.refunded,
        credited=split.credited,
        reason=reason,
        issued_at=now,
    )
    tx.session.add(note)
    invoice.amount_credited = invoice.amount_credited + amount
    was_open = invoice.status == "open"
    if was_open and domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited) == 0:
        invoice.status = "paid"
        invoice.paid_at = now
    await record.credit(tx, lead_id=invoice.lead_id, currency=invoice.currency, amount=split.credited)
    tx.emit(
        "credit_note.issued",
        ev.CreditNoteIssued(
            credit_note_id=note.id,
            number=note.number,
            invoice_id=invoice.id,
            amount=amount,
            currency=invoice.currency,
            reduces_due=split.reduces_due,
            refunded=split.refunded,
            credited=split.credited,
            reason=reason,
            issued_at=now,
        ),
        lead_id=invoice.lead_id,
    )
    if was_open and invoice.status == "paid":
        await dunning.close_dunning(tx, invoice, reason="credited")
    return note


async def list_credit_notes(
    tx: UnitOfWork, *, lead_id: uuid.UUID | None, invoice_id: uuid.UUID | None
) -> list[CreditNote]:
    """Credit notes of a client or of an invoice (or all), in number order."""
    query = select(CreditNote)
    if lead_id is not None:
        query = query.where(CreditNote.lead_id == lead_id)
    if invoice_id is not None:
        query = query.where(CreditNote.invoice_id == invoice_id)
    return list(await tx.session.scalars(query.order_by(CreditNote.number)))

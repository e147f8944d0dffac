"""Write-offs: a won project that turned into a "project from hell" is ended as a loss.

Its open invoices nothing was paid on are voided (``invoices.void_invoice``), what is still
due on partly paid ones is cancelled by a credit note (``payments.issue_credit_note``), the
rest of the estimate is never invoiced, and the difference between what the deal was worth
and what was paid is recorded, announced (``deal.written_off``) and reported per client and
per acquisition channel (docs/design.md, "Business rules").

Each use case runs inside the caller's unit of work: the voids, credit notes, the write-off
row and the events commit together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, invoices, payments
from services.billing.store import Deal, Invoice, WriteOff
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.money import quantize
from shared.uow import UnitOfWork

# The invoices that make up what a project is worth: the estimate (deposit, milestones,
# final) and the change orders the client approved.
_PROJECT_KINDS = ("deposit", "milestone", "final", "change_order")

# The channel a write-off is reported under when deal.won named none.
UNKNOWN_CHANNEL = "unknown"


async def write_off(tx: UnitOfWork, *, deal_id: uuid.UUID, reason: str) -> WriteOff:
    """End a won project as a loss (``deal.written_off``): void its open unpaid invoices,
    credit what is still due on partly paid ones, invoice nothing more, and record what it
    was worth (the estimate plus approved change orders) minus what was paid.

    Refused, with nothing changed: an unknown deal (404: billing learns of a deal when it is
    won), a retainer (409: only a project is written off; a retainer is cancelled), a deal
    already written off (409)."""
    deal = await tx.session.scalar(select(Deal).where(Deal.deal_id == deal_id).with_for_update())
    if deal is None:
        raise NotFound(f"deal_id: no won deal {deal_id} in billing (billing learns of a deal when it is won)")
    if deal.kind != "project":
        raise Conflict(f"deal {deal_id} is a {deal.kind}: only a project is written off (a retainer is cancelled)")
    if await tx.session.get(WriteOff, deal_id) is not None:
        raise Conflict(f"deal {deal_id} is already written off")
    rows = list(
        await tx.session.scalars(
            select(Invoice)
            .where(Invoice.deal_id == deal_id, Invoice.kind.in_(_PROJECT_KINDS), Invoice.status != "void")
            .order_by(Invoice.number)
        )
    )
    worth = deal.total + sum((i.amount for i in rows if i.kind == "change_order"), Decimal(0))
    paid = sum((i.amount_paid for i in rows), Decimal(0))
    voided: list[uuid.UUID] = []
    notes: list[uuid.UUID] = []
    for invoice in rows:
        if invoice.status != "open":
            continue
        if invoice.amount_paid == 0:
            await invoices.void_invoice(tx, invoice.id, reason=f"written off: {reason}")
            voided.append(invoice.id)
            continue
        still_due = domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited)
        if still_due > 0:
            note = await payments.issue_credit_note(
                tx,
                invoice_id=invoice.id,
                amount=still_due,
                currency=invoice.currency,
                reason=f"written off: {reason}",
                refund=False,
            )
            notes.append(note.id)
    amount = quantize(max(worth - paid, Decimal(0)))
    now = tx.now()
    row = WriteOff(
        deal_id=deal.deal_id,
        lead_id=deal.lead_id,
        channel=deal.channel,
        currency=deal.currency,
        worth=quantize(worth),
        paid=quantize(paid),
        amount=amount,
        reason=reason,
        voided_invoice_ids=[str(i) for i in voided],
        credit_note_ids=[str(n) for n in notes],
        written_off_at=now,
    )
    tx.session.add(row)
    tx.emit(
        "deal.written_off",
        ev.DealWrittenOff(
            deal_id=deal.deal_id,
            amount=amount,
            currency=deal.currency,
            reason=reason,
            channel=deal.channel,
            voided_invoice_ids=voided,
            credit_note_ids=notes,
            written_off_at=now,
        ),
        lead_id=deal.lead_id,
    )
    return row


@dataclass(frozen=True)
class WriteOffReport:
    """Write-offs and their totals per currency and per channel then currency (never converted)."""

    write_offs: list[WriteOff]
    totals: dict[str, Decimal]
    by_channel: dict[str, dict[str, Decimal]]


async def list_write_offs(tx: UnitOfWork, *, lead_id: uuid.UUID | None, channel: str | None) -> WriteOffReport:
    """A client's or a channel's write-offs (or all), oldest first, with their totals."""
    query = select(WriteOff)
    if lead_id is not None:
        query = query.where(WriteOff.lead_id == lead_id)
    if channel == UNKNOWN_CHANNEL:
        query = query.where(WriteOff.channel.is_(None))
    elif channel is not None:
        query = query.where(WriteOff.channel == channel)
    rows = list(await tx.session.scalars(query.order_by(WriteOff.written_off_at, WriteOff.deal_id)))
    by_channel: dict[str, list[tuple[str, Decimal]]] = {}
    for r in rows:
        by_channel.setdefault(r.channel or UNKNOWN_CHANNEL, []).append((r.currency, r.amount))
    return WriteOffReport(
        write_offs=rows,
        totals=domain.totals_by_currency((r.currency, r.amount) for r in rows),
        by_channel={c: domain.totals_by_currency(amounts) for c, amounts in by_channel.items()},
    )

"""Deposit discipline: "we start when the deposit is in the bank" kept as a rule, not a flag.

Leads follows each deposit invoice billing issues (``invoice.issued`` kind deposit) until it
clears (``deposit.cleared``, kept as the client's payment by ``team``: no second write per
event) or is voided (``invoice.voided``). One still unpaid
``LEADS_SALES_DEPOSIT_OVERDUE_DAYS`` (7) days after its due date raises the ``refuses_deposit``
red flag on the lead, with the invoice as evidence, and a ``deposit_unpaid`` task for the lead's
owner. Billing never authorizes work on a deal whose deposit has not cleared
(``GET /deals/{deal_id}/authorization``), so the work simply does not start."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update

from services.leads.context import Context
from services.leads.qualification import raise_red_flag
from services.leads.record import lead_for_event
from services.leads.sales import raise_task
from services.leads.store import ClientPayment, PendingDeposit
from shared import events as ev
from shared.db import ensure_row
from shared.jobs import Pass
from shared.uow import UnitOfWork, UnitOfWorkFactory

DEPOSIT_JOB = "leads.deposit_discipline"


async def deposit_issued(tx: UnitOfWork, event: ev.Envelope, data: ev.InvoiceIssued) -> None:
    """Follow a deposit invoice from the moment it is issued (other kinds are not followed)."""
    if data.kind != "deposit" or event.lead_id is None:
        return
    values = {
        "invoice_id": data.invoice_id,
        "lead_id": event.lead_id,
        "deal_id": data.deal_id,
        "number": data.number,
        "amount": data.amount,
        "currency": data.currency,
        "due_at": data.due_at,
    }
    await ensure_row(tx.session, PendingDeposit, values)


async def deposit_closed(tx: UnitOfWork, invoice_id: uuid.UUID, at: datetime) -> None:
    """The deposit's invoice was voided: nothing more to watch."""
    await tx.session.execute(
        update(PendingDeposit)
        .where(PendingDeposit.invoice_id == invoice_id, PendingDeposit.closed_at.is_(None))
        .values(closed_at=at)
        .execution_options(synchronize_session=False)
    )


async def flag_unpaid(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> Pass[uuid.UUID, bool]:
    """Scheduled: every deposit still unpaid its grace days after the due date raises
    ``refuses_deposit`` (once) and a task for the lead's owner."""
    grace = timedelta(days=ctx.settings.sales.deposit_overdue_days)
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(PendingDeposit.invoice_id)
                .where(
                    PendingDeposit.closed_at.is_(None),
                    PendingDeposit.flagged_at.is_(None),
                    PendingDeposit.due_at <= now - grace,
                    ~exists().where(
                        ClientPayment.invoice_id == PendingDeposit.invoice_id, ClientPayment.kind == "deposit"
                    ),
                )
                .order_by(PendingDeposit.due_at)
                .limit(1000)
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, PendingDeposit]:
        rows = await tx.session.scalars(
            select(PendingDeposit).where(PendingDeposit.invoice_id.in_(ids), PendingDeposit.flagged_at.is_(None))
        )
        return {r.invoice_id: r for r in rows}

    async def flag(tx: UnitOfWork, deposit: PendingDeposit) -> bool:
        deposit.flagged_at = now
        lead = await lead_for_event(tx, deposit.lead_id)
        if lead is None or lead.erased_at is not None:
            return False
        days = (now - deposit.due_at).days
        evidence = (
            f"deposit invoice {deposit.number} ({deposit.amount} {deposit.currency}) unpaid {days} days after "
            f"its due date {deposit.due_at:%Y-%m-%d}"
        )
        await raise_red_flag(tx, lead, name="refuses_deposit", evidence=evidence, source="billing")
        raise_task(
            tx,
            lead_id=lead.id,
            kind="deposit_unpaid",
            title=f"{lead.name or lead.company or lead.id}: the deposit is {days} days late; no work starts without it",
            source=f"deposit_unpaid:{deposit.invoice_id}",
            owner_id=lead.owner_id or lead.account_owner_id,
            due_at=now + timedelta(days=1),
            detail=evidence,
        )
        return True

    return await ctx.jobs(DEPOSIT_JOB).run(uow, due, flag, now=now, load=load)

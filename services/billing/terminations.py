"""The agency ended a relationship (``client.terminated``): at ``effective_at`` (at once for no
notice) every running subscription of the client ends through the ordinary cancel path
(``subscription.cancelled`` with reason ``terminated:<reason>``; no period beginning after
``effective_at`` is billed) and a **final invoice** (kind ``final``) bills what was never
invoiced: the last period's hours over the included ones and the work done to date on won
projects (domain/terminations.py). ``invoice.issued`` as usual, so nurture mails it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, hours, invoices, payments, projects, subscriptions
from services.billing.context import Billing
from services.billing.domain import terminations as rules
from services.billing.store import BilledPeriod, Deal, Invoice, Subscription, Termination, WriteOff
from shared import events as ev
from shared.errors import Invalid
from shared.jobs import Pass
from shared.uow import UnitOfWork, UnitOfWorkFactory

END_JOB = "billing.terminations"


async def client_terminated(
    tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None, terminated: ev.ClientTerminated
) -> Termination:
    """Remember the termination; with no notice left, end the relationship now (else the
    scheduled pass does at ``effective_at``). The same event again changes nothing."""
    if lead_id is None:
        raise Invalid(f"client.terminated {terminated.termination_id} has no lead_id")
    row = await tx.session.get(Termination, terminated.termination_id)
    if row is not None:
        return row
    row = Termination(
        id=terminated.termination_id,
        lead_id=lead_id,
        reason=terminated.reason,
        effective_at=terminated.effective_at,
        status="notice",
        final_invoice_ids=[],
        created_at=tx.now(),
    )
    tx.session.add(row)
    if row.effective_at <= tx.now():
        await end_relationship(tx, ctx, row)
    return row


async def end_relationship(tx: UnitOfWork, ctx: Billing, row: Termination) -> list[Invoice]:
    """The notice ran out: bill the periods begun before ``effective_at``, take the last
    period's hours onto the final invoice, end every running subscription (the existing cancel
    path: a credit note for the unused part of the period) and issue the final invoice."""
    if row.status == "ended":
        return []
    now, effective_at = tx.now(), row.effective_at
    lines: dict[str, list[ev.InvoiceLine]] = {}
    running = list(
        await tx.session.scalars(
            select(Subscription)
            .where(Subscription.lead_id == row.lead_id, Subscription.status.in_(domain.BILLED_STATUSES))
            .order_by(Subscription.created_at, Subscription.id)
            .with_for_update()
        )
    )
    for sub in running:
        await subscriptions.bill_due_periods(tx, ctx, sub, until=min(effective_at, now))
        start, end = sub.current_period_start, sub.current_period_end
        billed = await tx.session.get(BilledPeriod, (sub.id, start)) if start is not None else None
        if start is not None and end is not None and billed is not None:
            # Reported (and marked) here, so the cancel path does not bill them again.
            _used, overage = await hours.report_usage(tx, sub, period=(start, end), billed=billed)
            lines.setdefault(sub.currency, []).extend(overage)
    await subscriptions.cancel_subscriptions(
        tx, ctx, lead_id=row.lead_id, reason=rules.termination_reason(row.reason), effective_at=effective_at
    )
    single_deal: dict[str, uuid.UUID] = {}
    for deal, amount in await _work_done(tx, row.lead_id):
        lines.setdefault(deal.currency, []).append(
            ev.InvoiceLine(description=rules.work_done_text(deal.title), quantity=Decimal(1), amount=amount)
        )
        single_deal[deal.currency] = deal.deal_id
    issued: list[Invoice] = []
    for currency, billed_lines in sorted(lines.items()):
        if not billed_lines:
            continue
        # One project alone on the invoice: it counts as invoiced on that project.
        only = single_deal.get(currency) if len(billed_lines) == 1 else None
        invoice = await invoices.issue_invoice(
            tx,
            lead_id=row.lead_id,
            kind="final",
            currency=currency,
            lines=billed_lines,
            due_in_days=ctx.settings.invoice_due_days,
            deal_id=only,
        )
        await tx.session.flush()
        await payments.apply_credit_balance(tx, ctx, invoice)
        issued.append(invoice)
    row.status = "ended"
    row.ended_at = now
    row.final_invoice_ids = [str(i.id) for i in issued]
    return issued


async def _work_done(tx: UnitOfWork, lead_id: uuid.UUID) -> list[tuple[Deal, Decimal]]:
    """The client's won projects with work done not yet invoiced, and that amount."""
    written_off = set(await tx.session.scalars(select(WriteOff.deal_id).where(WriteOff.lead_id == lead_id)))
    found = []
    for deal in await tx.session.scalars(
        select(Deal).where(Deal.lead_id == lead_id, Deal.kind == "project").order_by(Deal.created_at, Deal.deal_id)
    ):
        amount = rules.work_done_to_date(
            rules.ProjectFacts(
                title=deal.title,
                currency=deal.currency,
                total=deal.total,
                invoiced=await projects.invoiced_on_project(tx, deal),
                cleared=deal.cleared_at is not None,
                written_off=deal.deal_id in written_off,
            )
        )
        if amount > 0:
            found.append((deal, amount))
    return found


async def end_due(uow: UnitOfWorkFactory, ctx: Billing, now: datetime) -> Pass[uuid.UUID, list[Invoice]]:
    """Scheduled, before the billing cycle (so no period beginning after ``effective_at`` is
    billed): every termination whose notice ran out ends its relationship, one a transaction
    (job ``billing.terminations``)."""
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(Termination.id).where(Termination.status == "notice", Termination.effective_at <= now)
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Termination]:
        rows = await tx.session.scalars(select(Termination).where(Termination.id.in_(ids)).with_for_update())
        return {t.id: t for t in rows}

    async def end(tx: UnitOfWork, row: Termination) -> list[Invoice]:
        return await end_relationship(tx, ctx, row)

    return await ctx.jobs(END_JOB).run(uow, due, end, now=now, load=load, together=False)

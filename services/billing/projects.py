"""Projects: the rest of a project invoiced by milestones or at the end, and change orders
(out-of-scope requests priced and invoiced once approved; in-scope ones counted at no
charge; out-of-scope work never billed reported as leaked revenue)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, invoices, payments
from services.billing.context import Billing
from services.billing.store import ChangeOrder, Deal, Invoice, Subscription, WriteOff
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.money import quantize
from shared.uow import UnitOfWork


async def invoiced_on_project(tx: UnitOfWork, deal: Deal) -> Decimal:
    """What the estimate has been invoiced for so far: the deposit, milestones and final."""
    rows = await tx.session.scalars(
        select(Invoice.amount).where(
            Invoice.deal_id == deal.deal_id,
            Invoice.kind.in_(("deposit", "milestone", "final")),
            Invoice.status != "void",
        )
    )
    return sum(rows, Decimal(0))


async def invoice_project(
    tx: UnitOfWork, ctx: Billing, *, deal_id: uuid.UUID, kind: str, amount: Decimal | None, description: str | None
) -> tuple[Invoice, Decimal]:
    """Invoice a milestone (an amount of what remains) or the final balance of a project
    (``invoice.issued``). Work starts only after the deposit, so neither comes before it.
    Returns the invoice and what remains to invoice after it."""
    deal = await tx.session.scalar(select(Deal).where(Deal.deal_id == deal_id).with_for_update())
    if deal is None:
        raise NotFound(f"no deal {deal_id} in billing (billing learns of a deal when it is won)")
    domain.project_invoice_check(deal_kind=deal.kind, cleared=deal.cleared_at is not None)
    await _not_written_off(tx, deal_id)
    remaining = domain.remaining_to_invoice(total=deal.total, invoiced=await invoiced_on_project(tx, deal))
    amount = domain.project_invoice_amount(kind=kind, amount=amount, remaining=remaining)
    text = description or (f"Final balance: {deal.title}" if kind == "final" else f"Milestone: {deal.title}")
    invoice = await invoices.issue_invoice(
        tx,
        lead_id=deal.lead_id,
        kind=kind,
        currency=deal.currency,
        lines=[ev.InvoiceLine(description=text, quantity=Decimal(1), amount=amount)],
        due_in_days=ctx.settings.invoice_due_days,
        deal_id=deal.deal_id,
    )
    await tx.session.flush()
    await payments.apply_credit_balance(tx, ctx, invoice)
    return invoice, remaining - amount


# --------------------------------------------------------------------------- change orders


async def change_requested(
    tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None, request: ev.DealChangeRequested
) -> ChangeOrder:
    """A change was asked for on a deal. In scope: counted, no charge. Out of scope: a priced
    change order, proposed until the client approves it (then invoiced). The same request
    again changes nothing."""
    if lead_id is None:
        raise Invalid(f"deal.change_requested {request.request_id} has no lead_id")
    existing = await tx.session.get(ChangeOrder, request.request_id)
    if existing is not None:
        return existing
    amount = quantize(request.amount)
    if not request.in_scope and amount == 0 and request.hours:
        # Priced from the retainer's hourly rate when the request came without a price.
        rate = await tx.session.scalar(select(Subscription.hourly_rate).where(Subscription.deal_id == request.deal_id))
        if rate:
            amount = quantize(request.hours * rate)
    order = ChangeOrder(
        request_id=request.request_id,
        deal_id=request.deal_id,
        lead_id=lead_id,
        description=request.description,
        in_scope=request.in_scope,
        hours=request.hours,
        amount=Decimal(0) if request.in_scope else amount,
        currency=request.currency,
        status="in_scope" if request.in_scope else "proposed",
        created_at=tx.now(),
    )
    tx.session.add(order)
    # No event says a change was requested here: counted when the order commits.
    outcome = "in_scope" if request.in_scope else "priced"
    tx.after_commit(lambda: ctx.metrics.change_requests.labels(outcome).inc())
    return order


async def _not_written_off(tx: UnitOfWork, deal_id: uuid.UUID) -> None:
    """A written-off project bills nothing more."""
    if await tx.session.get(WriteOff, deal_id) is not None:
        raise Conflict(f"deal {deal_id} was written off; it is not invoiced any more")


async def _order(tx: UnitOfWork, request_id: uuid.UUID) -> ChangeOrder:
    order = await tx.session.scalar(select(ChangeOrder).where(ChangeOrder.request_id == request_id).with_for_update())
    if order is None:
        raise NotFound(f"no change order {request_id}")
    return order


async def approve(tx: UnitOfWork, ctx: Billing, request_id: uuid.UUID) -> ChangeOrder:
    """The client approved the change order: it is invoiced (``invoice.issued``, kind
    ``change_order``), once; approving again answers the same order."""
    order = await _order(tx, request_id)
    if order.status == "invoiced":
        return order
    domain.approve_check(status=order.status, in_scope=order.in_scope, amount=order.amount)
    if order.deal_id is not None:
        await _not_written_off(tx, order.deal_id)
    invoice = await invoices.issue_invoice(
        tx,
        lead_id=order.lead_id,
        kind="change_order",
        currency=order.currency,
        lines=[
            ev.InvoiceLine(
                description=f"Change order: {order.description or 'out-of-scope work'}",
                quantity=order.hours or Decimal(1),
                amount=quantize(order.amount),
            )
        ],
        due_in_days=ctx.settings.invoice_due_days,
        deal_id=order.deal_id,
    )
    await tx.session.flush()  # the invoice row first: the order points at it
    order.status = "invoiced"
    order.invoice_id = invoice.id
    order.decided_at = tx.now()  # counted as "invoiced" from its invoice.issued (kind change_order)
    await tx.session.flush()
    await payments.apply_credit_balance(tx, ctx, invoice)
    return order


async def reject(tx: UnitOfWork, request_id: uuid.UUID) -> ChangeOrder:
    """The client turned the change order down (an invoiced one is corrected by credit note)."""
    order = await _order(tx, request_id)
    domain.reject_check(status=order.status, in_scope=order.in_scope)
    order.status = "rejected"
    order.decided_at = tx.now()
    return order


async def work_done(tx: UnitOfWork, request_id: uuid.UUID) -> ChangeOrder:
    """The work of the change was delivered (if never invoiced, it is leaked revenue)."""
    order = await _order(tx, request_id)
    order.work_done_at = order.work_done_at or tx.now()
    return order


def is_leaked(order: ChangeOrder, *, now: datetime, leak_after_days: int) -> bool:
    """Whether the order is out-of-scope work never billed (the rule: ``domain.is_leaked``)."""
    return domain.is_leaked(
        in_scope=order.in_scope,
        status=order.status,
        work_done_at=order.work_done_at,
        created_at=order.created_at,
        now=now,
        leak_after_days=leak_after_days,
    )


async def list_orders(tx: UnitOfWork, *, lead_id: uuid.UUID | None, deal_id: uuid.UUID | None) -> list[ChangeOrder]:
    """Change orders of a client or of a deal (or all), oldest first."""
    query = select(ChangeOrder)
    if lead_id is not None:
        query = query.where(ChangeOrder.lead_id == lead_id)
    if deal_id is not None:
        query = query.where(ChangeOrder.deal_id == deal_id)
    return list(await tx.session.scalars(query.order_by(ChangeOrder.created_at, ChangeOrder.request_id)))


async def leaked(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None = None) -> list[ChangeOrder]:
    """Out-of-scope work never billed, oldest first."""
    now = tx.now()
    query = select(ChangeOrder).where(ChangeOrder.in_scope.is_(False), ChangeOrder.status != "invoiced")
    if lead_id is not None:
        query = query.where(ChangeOrder.lead_id == lead_id)
    rows = await tx.session.scalars(query.order_by(ChangeOrder.created_at))
    return [o for o in rows if is_leaked(o, now=now, leak_after_days=ctx.settings.leak_after_days)]


@dataclass(frozen=True)
class LeakedRevenue:
    """Out-of-scope work never billed, and its total per currency (never converted)."""

    totals: dict[str, Decimal]
    orders: list[ChangeOrder]


async def leaked_revenue(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None = None) -> LeakedRevenue:
    """The leaked-revenue report: the orders and their totals per currency."""
    orders = await leaked(tx, ctx, lead_id=lead_id)
    return LeakedRevenue(totals=domain.totals_by_currency((o.currency, o.amount) for o in orders), orders=orders)

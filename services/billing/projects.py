"""Projects: the rest of a project invoiced by milestones or at the end, and change orders
(out-of-scope requests priced and invoiced once approved; in-scope ones counted at no
charge; out-of-scope work never billed reported as leaked revenue)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, handlers
from services.billing.context import Billing
from services.billing.store import ChangeOrder, Deal, Invoice, Subscription
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
    (``invoice.issued``). Work starts only after the deposit, so neither comes before it."""
    deal = await tx.session.scalar(select(Deal).where(Deal.deal_id == deal_id).with_for_update())
    if deal is None:
        raise NotFound(f"no deal {deal_id} in billing (billing learns of a deal when it is won)")
    if deal.kind != "project":
        raise Conflict("a retainer is billed monthly; milestones and final invoices are for projects")
    if deal.cleared_at is None:
        raise Conflict("the deposit has not cleared: work has not started, so there is nothing to invoice yet")
    remaining = domain.remaining_to_invoice(total=deal.total, invoiced=await invoiced_on_project(tx, deal))
    if remaining <= 0:
        raise Conflict("the project is fully invoiced")
    if kind == "final":
        if amount is not None and amount != remaining:
            raise Invalid(f"the final invoice is the balance of the project ({remaining}); leave amount out")
        amount = remaining
        text = description or f"Final balance: {deal.title}"
    else:
        if amount is None:
            raise Invalid("a milestone needs its amount")
        domain.milestone_check(amount=amount, remaining=remaining)
        text = description or f"Milestone: {deal.title}"
    invoice = await handlers.issue_invoice(
        tx,
        lead_id=deal.lead_id,
        kind=kind,
        currency=deal.currency,
        lines=[ev.InvoiceLine(description=text, quantity=Decimal(1), amount=amount)],
        due_in_days=ctx.settings.invoice_due_days,
        deal_id=deal.deal_id,
    )
    await tx.session.flush()
    await handlers.apply_credit_balance(tx, ctx, invoice)
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
    outcome = "in_scope" if request.in_scope else "priced"
    tx.after_commit(lambda: ctx.metrics.change_requests.labels(outcome).inc())
    return order


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
    if order.in_scope:
        raise Conflict("an in-scope request is done at no charge: there is nothing to approve")
    if order.status == "rejected":
        raise Conflict("the change order was rejected")
    if order.amount <= 0:
        raise Conflict("the change order has no price: it cannot be invoiced")
    invoice = await handlers.issue_invoice(
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
    order.decided_at = tx.now()
    tx.after_commit(lambda: ctx.metrics.change_requests.labels("invoiced").inc())
    await tx.session.flush()
    await handlers.apply_credit_balance(tx, ctx, invoice)
    return order


async def reject(tx: UnitOfWork, request_id: uuid.UUID) -> ChangeOrder:
    order = await _order(tx, request_id)
    if order.status == "invoiced":
        raise Conflict("the change order is invoiced: correct it with a credit note")
    if order.in_scope:
        raise Conflict("an in-scope request is not a change order")
    order.status = "rejected"
    order.decided_at = tx.now()
    return order


async def work_done(tx: UnitOfWork, request_id: uuid.UUID) -> ChangeOrder:
    """The work of the change was delivered (if never invoiced, it is leaked revenue)."""
    order = await _order(tx, request_id)
    order.work_done_at = order.work_done_at or tx.now()
    return order


def is_leaked(order: ChangeOrder, *, now: datetime, leak_after_days: int) -> bool:
    """Out-of-scope work that was never billed: delivered without an invoice, or left
    neither approved nor rejected for too long (the work usually went ahead anyway)."""
    if order.in_scope or order.status == "invoiced":
        return False
    if order.work_done_at is not None:
        return True
    return order.status == "proposed" and now - order.created_at >= timedelta(days=leak_after_days)


async def list_orders(
    tx: UnitOfWork, *, lead_id: uuid.UUID | None, deal_id: uuid.UUID | None
) -> list[ChangeOrder]:
    query = select(ChangeOrder)
    if lead_id is not None:
        query = query.where(ChangeOrder.lead_id == lead_id)
    if deal_id is not None:
        query = query.where(ChangeOrder.deal_id == deal_id)
    return list(await tx.session.scalars(query.order_by(ChangeOrder.created_at, ChangeOrder.request_id)))


async def leaked(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None = None) -> list[ChangeOrder]:
    now = tx.now()
    query = select(ChangeOrder).where(ChangeOrder.in_scope.is_(False), ChangeOrder.status != "invoiced")
    if lead_id is not None:
        query = query.where(ChangeOrder.lead_id == lead_id)
    rows = await tx.session.scalars(query.order_by(ChangeOrder.created_at))
    return [o for o in rows if is_leaked(o, now=now, leak_after_days=ctx.settings.leak_after_days)]

"""Billing's HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, Depends, Query, Response

from services.billing import domain, handlers
from services.billing.metrics import BillingMetrics
from services.billing.schemas import (
    AuthorizationOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePaymentOut,
    PaymentIn,
    PaymentOut,
    SubscriptionOut,
    VoidIn,
)
from services.billing.settings import Settings
from services.billing.store import Deal, Invoice, Payment, Subscription
from shared.http import api_key_guard
from shared.money import quantize
from shared.service import ServiceRuntime


def _due(invoice: Invoice) -> Decimal:
    if invoice.status == "void":
        return domain.ZERO  # a void invoice asks for nothing any more
    return quantize(domain.amount_due(invoice.amount, invoice.amount_paid))


def invoice_out(invoice: Invoice, payments: list[Payment] | None = None) -> InvoiceOut:
    return InvoiceOut(
        invoice_id=invoice.id,
        number=invoice.number,
        kind=invoice.kind,
        status=invoice.status,
        lead_id=invoice.lead_id,
        deal_id=invoice.deal_id,
        subscription_id=invoice.subscription_id,
        currency=invoice.currency,
        amount=quantize(invoice.amount),
        amount_paid=quantize(invoice.amount_paid),
        amount_due=_due(invoice),
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
        void_reason=invoice.void_reason,
        lines=[
            InvoiceLineOut(description=line.description, quantity=line.quantity, amount=quantize(line.amount))
            for line in invoice.lines
        ],
        payments=[
            InvoicePaymentOut(
                payment_id=p.id,
                amount=quantize(p.amount),
                applied=quantize(p.applied),
                credited=quantize(p.credited),
                method=p.method,
                paid_at=p.received_at,
                days_late=p.days_late,
            )
            for p in payments or []
        ],
    )


def authorization_out(deal: Deal, invoice: Invoice) -> AuthorizationOut:
    return AuthorizationOut(
        deal_id=deal.deal_id,
        lead_id=deal.lead_id,
        may_start=deal.cleared_at is not None,
        deposit_invoice_id=invoice.id,
        deposit_status=invoice.status,
        deposit_amount=quantize(deal.deposit_amount),
        deposit_cleared_at=deal.cleared_at,
        amount_due=_due(invoice),
        currency=invoice.currency,
    )


def subscription_out(s: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        subscription_id=s.id,
        lead_id=s.lead_id,
        deal_id=s.deal_id,
        status=s.status,
        currency=s.currency,
        monthly_fee=quantize(s.monthly_fee),
        included_hours=s.included_hours,
        hourly_rate=quantize(s.hourly_rate) if s.hourly_rate is not None else None,
        started_at=s.started_at,
        current_period_start=s.current_period_start,
        current_period_end=s.current_period_end,
        paused_fee=quantize(s.paused_fee) if s.paused_fee is not None else None,
        paused_until=s.paused_until,
        cancelled_at=s.cancelled_at,
    )


def router(runtime: ServiceRuntime, settings: Settings, metrics: BillingMetrics) -> APIRouter:
    uow = runtime.uow
    write = [Depends(api_key_guard(settings.api_key.get_secret_value()))]
    api = APIRouter()

    @api.get("/invoices", response_model=list[InvoiceOut], tags=["invoices"])
    async def list_invoices(
        response: Response,
        lead_id: uuid.UUID | None = None,
        status: Literal["open", "paid", "void"] | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> list[InvoiceOut]:
        """A client's invoices (or all), in number order; `X-Total-Count` says how many match."""
        async with uow() as tx:
            rows, total = await handlers.list_invoices(tx, lead_id=lead_id, status=status, limit=limit, offset=offset)
            payments = await handlers.invoice_payments(tx, [r.id for r in rows])
        response.headers["X-Total-Count"] = str(total)
        return [invoice_out(r, payments[r.id]) for r in rows]

    @api.get("/invoices/{invoice_id}", response_model=InvoiceOut, tags=["invoices"])
    async def read_invoice(invoice_id: uuid.UUID) -> InvoiceOut:
        async with uow() as tx:
            invoice = await handlers.get_invoice(tx, invoice_id)
            payments = await handlers.invoice_payments(tx, [invoice.id])
            return invoice_out(invoice, payments[invoice.id])

    @api.post("/invoices/{invoice_id}/void", response_model=InvoiceOut, dependencies=write, tags=["invoices"])
    async def void(invoice_id: uuid.UUID, body: VoidIn) -> InvoiceOut:
        """Void an open invoice nothing was paid on (it keeps its number; 409 otherwise)."""
        async with uow() as tx:
            return invoice_out(await handlers.void_invoice(tx, invoice_id, reason=body.reason))

    @api.get("/deals/{deal_id}/authorization", response_model=AuthorizationOut, tags=["deals"])
    async def authorization(deal_id: uuid.UUID) -> AuthorizationOut:
        """`may_start` is true only once the deal's deposit is fully paid."""
        async with uow() as tx:
            return authorization_out(*await handlers.get_deal(tx, deal_id))

    @api.post("/payments", status_code=201, response_model=PaymentOut, dependencies=write, tags=["payments"])
    async def record_payment(body: PaymentIn) -> PaymentOut:
        """Record a manual payment; partial payments add up, a surplus becomes credit."""
        async with uow() as tx:
            metrics.watch(tx)
            return await handlers.record_payment(tx, body)

    @api.get("/subscriptions", response_model=list[SubscriptionOut], tags=["subscriptions"])
    async def list_subscriptions(lead_id: uuid.UUID | None = None) -> list[SubscriptionOut]:
        async with uow() as tx:
            return [subscription_out(s) for s in await handlers.list_subscriptions(tx, lead_id)]

    return api

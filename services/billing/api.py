"""Billing's HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from services.billing import (
    deposits,
    domain,
    dunning,
    hours,
    invoices,
    payments,
    price_changes,
    projects,
    reports,
    subscriptions,
)
from services.billing.context import Billing
from services.billing.gateway import ProviderEvent
from services.billing.schemas import (
    AuthorizationOut,
    ChangeOrderOut,
    CreditNoteIn,
    CreditNoteOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePaymentOut,
    LeakedRevenueOut,
    PaymentIn,
    PaymentOut,
    PeriodHoursOut,
    PriceChangeIn,
    PriceChangeOut,
    ProjectInvoiceIn,
    ScheduledPriceOut,
    SubscriptionOfferOut,
    SubscriptionOut,
    TimeEntryIn,
    TimeEntryOut,
    VoidIn,
    WebhookIn,
)
from services.billing.store import ChangeOrder, Deal, Invoice, Payment, Subscription
from shared.access import policy as P
from shared.access.rules import need, public
from shared.bounds import MAX_COUNT
from shared.errors import Invalid
from shared.money import quantize
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def _due(invoice: Invoice) -> Decimal:
    return quantize(
        domain.amount_asked(
            status=invoice.status,
            amount=invoice.amount,
            amount_paid=invoice.amount_paid,
            amount_credited=invoice.amount_credited,
        )
    )


def invoice_out(invoice: Invoice, received: list[Payment] | None = None) -> InvoiceOut:
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
        amount_credited=quantize(invoice.amount_credited),
        amount_due=_due(invoice),
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
        void_reason=invoice.void_reason,
        lines=[InvoiceLineOut.model_validate(line) for line in invoice.lines],
        payments=[InvoicePaymentOut.model_validate(p) for p in received or []],
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
        offer=(
            SubscriptionOfferOut(
                kind=s.offer_kind,
                fee=quantize(s.offer_fee) if s.offer_fee is not None else None,
                discount_percent=s.offer_percent,
                included_hours=s.offer_included_hours,
                starts_at=s.offer_from,
                ends_at=s.offer_until,
            )
            if s.offer_kind is not None
            else None
        ),
        cancelled_at=s.cancelled_at,
        dunning_state=s.dunning_state,
        service_blocked=domain.service_blocked(s.dunning_state),
    )


def change_order_out(o: ChangeOrder, *, leaked: bool) -> ChangeOrderOut:
    return ChangeOrderOut(
        request_id=o.request_id,
        deal_id=o.deal_id,
        lead_id=o.lead_id,
        description=o.description,
        in_scope=o.in_scope,
        hours=o.hours,
        amount=quantize(o.amount),
        currency=o.currency,
        status=o.status,
        invoice_id=o.invoice_id,
        work_done_at=o.work_done_at,
        leaked=leaked,
    )


def router(runtime: ServiceRuntime, ctx: Billing) -> APIRouter:
    uow = runtime.uow
    settings, metrics = ctx.settings, ctx.metrics
    api = APIRouter()

    def leaked_now(order: ChangeOrder, tx: UnitOfWork) -> bool:
        return projects.is_leaked(order, now=tx.now(), leak_after_days=settings.leak_after_days)

    @api.get("/invoices", dependencies=[need(P.INVOICES_READ)], response_model=list[InvoiceOut], tags=["invoices"])
    async def list_invoices(
        response: Response,
        lead_id: uuid.UUID | None = None,
        status: Literal["open", "paid", "void"] | None = None,
        account_id: uuid.UUID | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_COUNT),
    ) -> list[InvoiceOut]:
        """A client's invoices (or a company account's, or all), in number order; `X-Total-Count`
        says how many match."""

        async def read(tx: UnitOfWork) -> tuple[list[InvoiceOut], int]:
            rows, total = await invoices.list_invoices(
                tx, lead_id=lead_id, status=status, limit=limit, offset=offset, account_id=account_id
            )
            received = await invoices.invoice_payments(tx, [r.id for r in rows])
            return [invoice_out(r, received[r.id]) for r in rows], total

        page, total = await runtime.reads.run(read)
        response.headers["X-Total-Count"] = str(total)
        return page

    @api.get(
        "/invoices/{invoice_id}",
        dependencies=[need(P.INVOICES_READ, person=True)],
        response_model=InvoiceOut,
        tags=["invoices"],
    )
    async def read_invoice(invoice_id: uuid.UUID) -> InvoiceOut:
        async with uow() as tx:
            invoice = await invoices.get_invoice(tx, invoice_id)
            received = await invoices.invoice_payments(tx, [invoice.id])
            return invoice_out(invoice, received[invoice.id])

    @api.post(
        "/invoices/{invoice_id}/void",
        dependencies=[need(P.INVOICES_WRITE)],
        response_model=InvoiceOut,
        tags=["invoices"],
    )
    async def void(invoice_id: uuid.UUID, body: VoidIn) -> InvoiceOut:
        """Void an open invoice nothing was paid on (it keeps its number; 409 otherwise)."""
        async with uow() as tx:
            return invoice_out(await invoices.void_invoice(tx, invoice_id, reason=body.reason))

    @api.get(
        "/deals/{deal_id}/authorization",
        dependencies=[need(P.INVOICES_READ, person=True)],
        response_model=AuthorizationOut,
        tags=["deals"],
    )
    async def authorization(deal_id: uuid.UUID) -> AuthorizationOut:
        """`may_start` is true only once the deal's deposit is fully paid."""
        async with uow() as tx:
            return authorization_out(*await deposits.get_deal(tx, deal_id))

    @api.post(
        "/payments",
        dependencies=[need(P.PAYMENTS_WRITE)],
        status_code=201,
        response_model=PaymentOut,
        tags=["payments"],
    )
    async def record_payment(body: PaymentIn) -> PaymentOut:
        """Record a manual payment; partial payments add up, a surplus becomes credit."""
        async with uow() as tx:
            return PaymentOut.model_validate(await payments.record_payment(tx, ctx, body))

    @api.get(
        "/subscriptions",
        dependencies=[need(P.SUBSCRIPTIONS_READ)],
        response_model=list[SubscriptionOut],
        tags=["subscriptions"],
    )
    async def list_subscriptions(lead_id: uuid.UUID | None = None) -> list[SubscriptionOut]:
        async with uow() as tx:
            return [subscription_out(s) for s in await subscriptions.list_subscriptions(tx, lead_id)]

    @api.get(
        "/subscriptions/{subscription_id}/hours",
        dependencies=[need(P.SUBSCRIPTIONS_READ)],
        response_model=list[PeriodHoursOut],
        tags=["subscriptions"],
    )
    async def hours_by_period(subscription_id: uuid.UUID) -> list[PeriodHoursOut]:
        """Hours used per period against those included, newest first (the current period open)."""
        async with uow() as tx:
            return [
                PeriodHoursOut.model_validate(p, from_attributes=True)
                for p in await hours.hours_by_period(tx, subscription_id)
            ]

    @api.post("/payments/webhook", dependencies=[public()], tags=["payments"])
    async def webhook(request: Request) -> dict[str, str]:
        """A payment provider's event (`payment.succeeded`, `payment.failed`), signed like
        Stripe's: header `Clientflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
        "<t>." + raw body with BILLING_WEBHOOK_SECRET>`. A bad signature or a timestamp outside
        the tolerance window answers 400; the same event `id` again answers 200 `duplicate`
        and changes nothing. No API key: the signature is the authentication."""
        body = await request.body()
        try:
            domain.verify_signature(
                header=request.headers.get(domain.SIGNATURE_HEADER),
                body=body,
                secret=settings.webhook_secret.get_secret_value(),
                now=runtime.clock.now(),
                tolerance_s=settings.webhook_tolerance_s,
            )
        except domain.BadSignature:
            # Refused before any transaction opens: there is no commit to wait for.
            metrics.webhooks.labels("bad_signature").inc()
            raise
        try:
            hook = WebhookIn.model_validate_json(body)
        except ValidationError as exc:
            raise Invalid(f"not a payment event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        event = ProviderEvent(
            event_id=hook.id,
            type=hook.type,
            invoice_id=hook.data.invoice_id,
            amount=hook.data.amount,
            currency=hook.data.currency,
            method=hook.data.method,
            reference=hook.data.reference,
            decline_code=hook.data.decline_code,
        )
        async with uow() as tx:
            return await dunning.receive_webhook(tx, ctx, event)

    @api.get(
        "/credit-notes", dependencies=[need(P.INVOICES_READ)], response_model=list[CreditNoteOut], tags=["invoices"]
    )
    async def list_credit_notes(
        lead_id: uuid.UUID | None = None, invoice_id: uuid.UUID | None = None
    ) -> list[CreditNoteOut]:
        async with uow() as tx:
            notes = await payments.list_credit_notes(tx, lead_id=lead_id, invoice_id=invoice_id)
            return [CreditNoteOut.model_validate(n) for n in notes]

    @api.post(
        "/invoices/{invoice_id}/credit-notes",
        dependencies=[need(P.INVOICES_WRITE)],
        status_code=201,
        response_model=CreditNoteOut,
        tags=["invoices"],
    )
    async def credit_note(invoice_id: uuid.UUID, body: CreditNoteIn) -> CreditNoteOut:
        """Correct an issued invoice (it never changes): the credit lowers what is still due;
        the paid part is refunded (`refund: true`) or kept as the client's credit."""
        async with uow() as tx:
            note = await payments.issue_credit_note(
                tx,
                invoice_id=invoice_id,
                amount=body.amount,
                currency=body.currency,
                reason=body.reason,
                refund=body.refund,
            )
            return CreditNoteOut.model_validate(note)

    @api.get("/credit-balances", dependencies=[need(P.INVOICES_READ)], tags=["payments"])
    async def credit_balances(lead_id: uuid.UUID) -> list[dict[str, str]]:
        """The client's credit per currency (never converted), spent on their next invoices."""
        async with uow() as tx:
            rows = await payments.credit_balances(tx, lead_id)
        return [{"currency": r.currency, "balance": format(quantize(r.balance), "f")} for r in rows]

    @api.post(
        "/deals/{deal_id}/invoices",
        dependencies=[need(P.INVOICES_WRITE)],
        status_code=201,
        response_model=InvoiceOut,
        tags=["deals"],
    )
    async def project_invoice(deal_id: uuid.UUID, body: ProjectInvoiceIn, response: Response) -> InvoiceOut:
        """Invoice a project's milestone (an amount) or its final balance (the rest of the
        estimate after the deposit and milestones); `X-Remaining` says what is left."""
        async with uow() as tx:
            invoice, remaining = await projects.invoice_project(
                tx, ctx, deal_id=deal_id, kind=body.kind, amount=body.amount, description=body.description
            )
            response.headers["X-Remaining"] = format(quantize(remaining), "f")
            return invoice_out(invoice)

    @api.get(
        "/change-orders",
        dependencies=[need(P.INVOICES_READ)],
        response_model=list[ChangeOrderOut],
        tags=["change orders"],
    )
    async def list_change_orders(
        lead_id: uuid.UUID | None = None, deal_id: uuid.UUID | None = None
    ) -> list[ChangeOrderOut]:
        async with uow() as tx:
            orders = await projects.list_orders(tx, lead_id=lead_id, deal_id=deal_id)
            return [change_order_out(o, leaked=leaked_now(o, tx)) for o in orders]

    @api.post(
        "/change-orders/{request_id}/approve",
        dependencies=[need(P.CHANGE_ORDERS_WRITE)],
        response_model=ChangeOrderOut,
        tags=["change orders"],
    )
    async def approve_change_order(request_id: uuid.UUID) -> ChangeOrderOut:
        """The client approved the priced change order: it is invoiced (once)."""
        async with uow() as tx:
            return change_order_out(await projects.approve(tx, ctx, request_id), leaked=False)

    @api.post(
        "/change-orders/{request_id}/reject",
        dependencies=[need(P.CHANGE_ORDERS_WRITE)],
        response_model=ChangeOrderOut,
        tags=["change orders"],
    )
    async def reject_change_order(request_id: uuid.UUID) -> ChangeOrderOut:
        async with uow() as tx:
            order = await projects.reject(tx, request_id)
            return change_order_out(order, leaked=leaked_now(order, tx))

    @api.post(
        "/change-orders/{request_id}/work-done",
        dependencies=[need(P.CHANGE_ORDERS_WRITE)],
        response_model=ChangeOrderOut,
        tags=["change orders"],
    )
    async def change_order_done(request_id: uuid.UUID) -> ChangeOrderOut:
        """The change was delivered; unbilled, it counts as leaked revenue."""
        async with uow() as tx:
            order = await projects.work_done(tx, request_id)
            return change_order_out(order, leaked=leaked_now(order, tx))

    @api.get(
        "/reports/leaked-revenue",
        dependencies=[need(P.MONEY_REPORTS_READ)],
        response_model=LeakedRevenueOut,
        tags=["reports"],
    )
    async def leaked_revenue(lead_id: uuid.UUID | None = None) -> LeakedRevenueOut:
        """Out-of-scope work never billed: delivered without an invoice, or left undecided
        longer than BILLING_LEAK_AFTER_DAYS. Totals per currency."""

        async def read(tx: UnitOfWork) -> LeakedRevenueOut:
            report = await projects.leaked_revenue(tx, ctx, lead_id=lead_id)
            return LeakedRevenueOut(
                totals=report.totals, change_orders=[change_order_out(o, leaked=True) for o in report.orders]
            )

        return await runtime.reads.run(read)

    @api.get("/reports/summary", dependencies=[need(P.REPORTS_READ)], tags=["reports"])
    async def summary() -> dict:
        """MRR (active only), subscriptions by status, receivables, overdue invoices, dunning
        states, days sales outstanding and leaked revenue, per currency."""
        figures = await runtime.reads.run(lambda tx: reports.refresh_gauges(tx, ctx), key="summary")
        return {name: _jsonable(value) for name, value in figures.items()}

    @api.post(
        "/time-entries",
        dependencies=[need(P.TIME_WRITE)],
        status_code=201,
        response_model=TimeEntryOut,
        tags=["subscriptions"],
    )
    async def time_entry(body: TimeEntryIn) -> TimeEntryOut:
        """Hours worked on an active retainer, counted against the period's included hours;
        overage is billed at the hourly rate on the next invoice."""
        async with uow() as tx:
            recorded = await hours.record_time(
                tx,
                ctx,
                subscription_id=body.subscription_id,
                hours=body.hours,
                description=body.description,
                change_order_id=body.change_order_id,
            )
            return TimeEntryOut.model_validate(recorded)

    @api.post(
        "/price-changes",
        dependencies=[need(P.PRICES_WRITE)],
        status_code=201,
        response_model=PriceChangeOut,
        tags=["subscriptions"],
    )
    async def price_change(body: PriceChangeIn) -> PriceChangeOut:
        """Schedule a price change (percent or new price) from a future date, announced with
        notices (30 and 7 days before by default); grandfathered subscriptions keep their price."""
        async with uow() as tx:
            done = await price_changes.schedule_price_change(
                tx,
                ctx,
                percent=body.percent,
                new_price=body.new_price,
                currency=body.currency,
                effective_at=body.effective,
                subscription_ids=body.subscription_ids,
                grandfathered=body.grandfathered,
            )
            return PriceChangeOut(
                price_change_id=done.change.id,
                effective_at=done.change.effective_at,
                notice_dates=done.notice_dates,
                subscriptions=[
                    ScheduledPriceOut(
                        subscription_id=s.subscription_id, old_price=quantize(s.old_fee), new_price=s.new_fee
                    )
                    for s in done.scheduled
                ],
                grandfathered=body.grandfathered,
            )

    @api.post(
        "/subscriptions/{subscription_id}/resume",
        dependencies=[need(P.SUBSCRIPTIONS_WRITE)],
        response_model=SubscriptionOut,
        tags=["subscriptions"],
    )
    async def resume(subscription_id: uuid.UUID) -> SubscriptionOut:
        """End a pause: the full fee applies again from the next period."""
        async with uow() as tx:
            return subscription_out(await subscriptions.resume_subscription(tx, ctx, subscription_id))

    return api


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return format(value, "f")
    return value

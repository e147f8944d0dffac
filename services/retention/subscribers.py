"""Retention's subscribers: translate an event into one use case."""

from __future__ import annotations

import uuid
from typing import Any

from services.retention import handlers
from services.retention.handlers import Context
from shared import events as ev
from shared.consumer import Handler, RejectEvent
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def _person(event: Envelope) -> uuid.UUID:
    if event.lead_id is None:
        raise RejectEvent(f"{event.type} {event.event_id} has no lead_id: it cannot be about a client")
    return event.lead_id


def handlers_for(ctx: Context) -> dict[str, Handler]:
    """One translation per event type retention learns from."""

    async def captured(tx: UnitOfWork, event: Envelope, p: ev.LeadCaptured) -> None:
        await handlers.record_capture(
            tx, ctx, _person(event), channel=p.channel, captured_at=event.occurred_at, duplicate=p.duplicate
        )

    async def deal_won(tx: UnitOfWork, event: Envelope, p: ev.DealWon) -> None:
        await handlers.record_deal_won(tx, ctx, _person(event), value=p.total, currency=p.currency)

    async def invoice_issued(tx: UnitOfWork, event: Envelope, p: ev.InvoiceIssued) -> None:
        await handlers.record_invoice(tx, ctx, _person(event), amount=p.amount, currency=p.currency)

    async def paid(tx: UnitOfWork, event: Envelope, p: ev.PaymentSucceeded) -> None:
        await handlers.record_payment(
            tx, ctx, _person(event), amount=p.amount, currency=p.currency, days_late=p.days_late
        )

    async def payment_failed(tx: UnitOfWork, event: Envelope, _p: Any) -> None:
        await handlers.record_payment_failure(tx, ctx, _person(event))

    async def deposit_cleared(tx: UnitOfWork, event: Envelope, p: ev.DepositCleared) -> None:
        await handlers.become_client(tx, ctx, _person(event), cleared_at=p.cleared_at)

    async def started(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionStarted) -> None:
        await handlers.start_subscription(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            deal_id=p.deal_id,
            monthly_fee=p.monthly_fee,
            currency=p.currency,
            started_at=p.started_at,
        )

    async def paused(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionPaused) -> None:
        await handlers.pause_subscription(
            tx, ctx, _person(event), subscription_id=p.subscription_id, paused_fee=p.paused_fee,
            currency=p.currency, until=p.until,
        )

    async def resumed(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionResumed) -> None:
        await handlers.resume_subscription(tx, ctx, _person(event), subscription_id=p.subscription_id)

    async def cancelled(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionCancelled) -> None:
        await handlers.cancel_subscription(
            tx, ctx, _person(event), subscription_id=p.subscription_id, reason=p.reason,
            effective_at=p.effective_at, monthly_fee=p.monthly_fee, currency=p.currency,
        )

    async def change_requested(tx: UnitOfWork, event: Envelope, p: ev.DealChangeRequested) -> None:
        await handlers.record_change_request(tx, ctx, _person(event), in_scope=p.in_scope)

    async def feedback(tx: UnitOfWork, event: Envelope, p: ev.FeedbackReceived) -> None:
        await handlers.record_feedback(tx, ctx, _person(event), score=p.score, complaint=p.complaint)

    async def erased(tx: UnitOfWork, event: Envelope, p: ev.LeadErased) -> None:
        await handlers.erase_client(tx, ctx, _person(event), requested_at=p.requested_at)

    return {
        "lead.captured": captured,
        "lead.erased": erased,
        "deal.won": deal_won,
        "deal.change_requested": change_requested,
        "feedback.received": feedback,
        "invoice.issued": invoice_issued,
        "payment.succeeded": paid,
        "payment.failed": payment_failed,
        "deposit.cleared": deposit_cleared,
        "subscription.started": started,
        "subscription.paused": paused,
        "subscription.resumed": resumed,
        "subscription.cancelled": cancelled,
    }


def register(runtime: ServiceRuntime, ctx: Context) -> None:
    runtime.consume(handlers_for(ctx))

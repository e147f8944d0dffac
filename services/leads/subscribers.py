"""Leads' subscribers: translate an event into one use case."""

from __future__ import annotations

from typing import Any

from services.leads import capture, deals, deposits, engagement, exports, funnel, record, returning, team
from services.leads.context import Context
from shared import events as ev
from shared.consumer import Handler, Prefetch
from shared.events import EVENT_TYPES, Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork

# Nurture may publish an inbound reply under one of these names; applied when the contract has it.
REPLY_TYPES = ("email.replied", "reply.received", "inbound.replied")
# What of an engagement event's payload goes into the lead's timeline.
ENGAGEMENT_DETAIL = ("url", "survey", "score", "complaint", "by")


def handlers_for(ctx: Context) -> dict[str, Handler]:
    async def deposit_cleared(tx: UnitOfWork, event: Envelope, payload: ev.DepositCleared) -> None:
        # The client is in ``action`` now, and the deposit counts for the rep who won the deal.
        await moves_stage(tx, event, payload)
        await team.deposit_cleared(tx, event, payload)  # also what tells deposits.py it cleared

    async def invoice_issued(tx: UnitOfWork, event: Envelope, payload: ev.InvoiceIssued) -> None:
        await deposits.deposit_issued(tx, event, payload)

    async def invoice_voided(tx: UnitOfWork, _event: Envelope, payload: ev.InvoiceVoided) -> None:
        await deposits.deposit_closed(tx, payload.invoice_id, payload.voided_at)

    async def paid(tx: UnitOfWork, event: Envelope, payload: ev.PaymentSucceeded) -> None:
        await team.payment_succeeded(tx, event, payload)

    async def moves_stage(tx: UnitOfWork, event: Envelope, _payload: Any) -> None:
        await funnel.apply_stage_event(tx, ctx, event.lead_id, event.type, occurred_at=event.occurred_at)

    async def engaged(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        detail = {k: v for k, v in payload.model_dump(mode="json").items() if k in ENGAGEMENT_DETAIL}
        await engagement.record_engagement(tx, ctx, event, **detail)

    async def replied(tx: UnitOfWork, event: Envelope, _payload: Any) -> None:
        await engagement.record_engagement(tx, ctx, event.model_copy(update={"type": "email.replied"}))

    async def sales_ready(tx: UnitOfWork, event: Envelope, payload: ev.LeadSalesReady) -> None:
        await engagement.sales_ready(tx, ctx, event, payload)

    async def unsubscribed(tx: UnitOfWork, event: Envelope, payload: ev.LeadUnsubscribed) -> None:
        await engagement.unsubscribed(tx, event, payload)

    async def tier_changed(tx: UnitOfWork, event: Envelope, payload: ev.ClientTierChanged) -> None:
        await deals.tier_changed(tx, event, payload)

    async def terminated(tx: UnitOfWork, event: Envelope, payload: ev.ClientTerminated) -> None:
        await returning.client_terminated(tx, event, payload)

    async def referral(tx: UnitOfWork, event: Envelope, payload: ev.ReferralMade) -> None:
        await capture.referral_made(tx, ctx, event, payload)

    async def export_part(tx: UnitOfWork, event: Envelope, payload: ev.ExportPart) -> None:
        await exports.receive_part(tx, ctx, event, payload)

    consumed: dict[str, Handler] = {
        "email.opened": engaged,
        "email.clicked": engaged,
        "feedback.received": engaged,
        "takeover.started": engaged,
        "lead.sales_ready": sales_ready,
        "lead.unsubscribed": unsubscribed,
        "deposit.cleared": deposit_cleared,
        "payment.succeeded": paid,
        "invoice.issued": invoice_issued,
        "invoice.voided": invoice_voided,
        "cancellation.saved": moves_stage,
        "cancellation.completed": moves_stage,
        "client.tier_changed": tier_changed,
        "referral.made": referral,
        "client.terminated": terminated,
        "export.part": export_part,
    }
    consumed |= {name: replied for name in REPLY_TYPES if name in EVENT_TYPES}
    return consumed


def prefetch_for(ctx: Context) -> Prefetch:
    async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
        await record.prefetch(tx, events)

    return prefetch


def register(runtime: ServiceRuntime, ctx: Context) -> None:
    runtime.consume(handlers_for(ctx), prefetch=prefetch_for(ctx))

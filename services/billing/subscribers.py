"""Billing's subscribers: translate an event into one use case."""

from __future__ import annotations

from services.billing import handlers
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings
from shared import events as ev
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def register(runtime: ServiceRuntime, settings: Settings, metrics: BillingMetrics) -> None:
    async def deal_won(tx: UnitOfWork, event: Envelope, payload: ev.DealWon) -> None:
        metrics.watch(tx)
        await handlers.open_deposit_invoice(tx, settings=settings, lead_id=event.lead_id, won=payload)

    async def cancellation_saved(tx: UnitOfWork, event: Envelope, payload: ev.CancellationSaved) -> None:
        metrics.watch(tx)
        await handlers.apply_save_offer(
            tx, lead_id=event.lead_id, offer=payload.offer, subscription_id=payload.subscription_id
        )

    async def cancellation_completed(tx: UnitOfWork, event: Envelope, payload: ev.CancellationCompleted) -> None:
        metrics.watch(tx)
        await handlers.cancel_subscriptions(
            tx,
            lead_id=event.lead_id,
            reason=payload.reason,
            effective_at=payload.effective_at,
            subscription_id=payload.subscription_id,
        )

    async def lead_erased(tx: UnitOfWork, event: Envelope, _payload: ev.LeadErased) -> None:
        await handlers.erase_contact(tx, event.lead_id)

    runtime.consume(
        {
            "deal.won": deal_won,
            "cancellation.saved": cancellation_saved,
            "cancellation.completed": cancellation_completed,
            "lead.erased": lead_erased,
        }
    )

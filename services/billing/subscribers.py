"""Billing's subscribers: translate an event into one use case."""

from __future__ import annotations

from services.billing import accounts, deposits, export, projects, record, subscriptions, terminations
from services.billing.context import Billing
from shared import events as ev
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def register(runtime: ServiceRuntime, ctx: Billing) -> None:
    async def deal_won(tx: UnitOfWork, event: Envelope, payload: ev.DealWon) -> None:
        await deposits.open_deposit_invoice(tx, ctx, lead_id=event.lead_id, won=payload)

    async def change_requested(tx: UnitOfWork, event: Envelope, payload: ev.DealChangeRequested) -> None:
        await projects.change_requested(tx, ctx, lead_id=event.lead_id, request=payload)

    async def cancellation_saved(tx: UnitOfWork, event: Envelope, payload: ev.CancellationSaved) -> None:
        await subscriptions.apply_save_offer(
            tx, ctx, lead_id=event.lead_id, offer=payload.offer, subscription_id=payload.subscription_id
        )

    async def cancellation_completed(tx: UnitOfWork, event: Envelope, payload: ev.CancellationCompleted) -> None:
        await subscriptions.cancel_subscriptions(
            tx,
            ctx,
            lead_id=event.lead_id,
            reason=payload.reason,
            effective_at=payload.effective_at,
            subscription_id=payload.subscription_id,
        )

    async def client_terminated(tx: UnitOfWork, event: Envelope, payload: ev.ClientTerminated) -> None:
        await terminations.client_terminated(tx, ctx, lead_id=event.lead_id, terminated=payload)

    async def tier_changed(tx: UnitOfWork, event: Envelope, payload: ev.ClientTierChanged) -> None:
        await accounts.set_tier(tx, event.lead_id, tier=payload.to_tier)

    async def takeover_started(tx: UnitOfWork, event: Envelope, _payload: ev.TakeoverStarted) -> None:
        await accounts.set_takeover(tx, event.lead_id, active=True)

    async def takeover_ended(tx: UnitOfWork, event: Envelope, _payload: ev.TakeoverEnded) -> None:
        await accounts.set_takeover(tx, event.lead_id, active=False)

    async def lead_captured(tx: UnitOfWork, event: Envelope, payload: ev.LeadCaptured) -> None:
        await accounts.set_company_account(tx, event.lead_id, account_id=payload.account_id)

    async def lead_erased(tx: UnitOfWork, event: Envelope, _payload: ev.LeadErased) -> None:
        await accounts.erase_contact(tx, event.lead_id)

    async def export_requested(tx: UnitOfWork, event: Envelope, payload: ev.ExportRequested) -> None:
        if event.lead_id is not None and not event.shredded:
            await export.export_person(tx, export_id=payload.export_id, lead_id=event.lead_id)

    runtime.consume(
        {
            "deal.won": deal_won,
            "deal.change_requested": change_requested,
            "cancellation.saved": cancellation_saved,
            "cancellation.completed": cancellation_completed,
            "client.tier_changed": tier_changed,
            "client.terminated": client_terminated,
            "takeover.started": takeover_started,
            "takeover.ended": takeover_ended,
            "lead.erased": lead_erased,
            "lead.captured": lead_captured,
            "export.requested": export_requested,
        },
        prefetch=record.prefetch,
    )

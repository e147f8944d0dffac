"""Retention's subscribers: translate an event into one use case."""

from __future__ import annotations

import uuid
from typing import Any

from services.retention import (
    accounts,
    cancellations,
    clients,
    export,
    loyalty,
    manual_tier,
    notes,
    rates,
    record,
    subscriptions,
    termination,
    tiers,
)
from services.retention.context import Context
from shared import events as ev
from shared.consumer import Handler, Prefetch, RejectEvent
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
        await clients.record_capture(
            tx,
            ctx,
            _person(event),
            channel=p.channel,
            captured_at=event.occurred_at,
            duplicate=p.duplicate,
            email=p.email,
            referred_by=p.referred_by,
            owner_id=p.owner_id,
        )
        await accounts.fold_account(tx, _person(event), account_id=p.account_id, duplicate=p.duplicate)

    async def assigned(tx: UnitOfWork, event: Envelope, p: ev.LeadAssigned) -> None:
        await clients.record_assignment(tx, _person(event), owner_id=p.owner_id, role=p.role)

    async def qualified(tx: UnitOfWork, event: Envelope, _p: Any) -> None:
        await clients.record_qualified(tx, ctx, _person(event))

    async def spend(tx: UnitOfWork, event: Envelope, p: ev.ChannelSpendRecorded) -> None:
        await clients.record_spend(
            tx,
            event_id=event.event_id,
            channel=p.channel,
            start=p.period_start,
            end=p.period_end,
            amount=p.amount,
            currency=p.currency,
        )

    async def proposed(tx: UnitOfWork, event: Envelope, _p: Any) -> None:
        await clients.record_proposed(tx, ctx, _person(event))

    async def deal_won(tx: UnitOfWork, event: Envelope, p: ev.DealWon) -> None:
        await clients.record_deal_won(
            tx,
            ctx,
            _person(event),
            value=p.total,
            currency=p.currency,
            hourly_rate=p.hourly_rate,
            red_flags=len(p.red_flags),
            channel=p.channel,
        )

    async def invoice_issued(tx: UnitOfWork, event: Envelope, p: ev.InvoiceIssued) -> None:
        await clients.record_invoice(
            tx,
            ctx,
            _person(event),
            amount=p.amount,
            currency=p.currency,
            kind=p.kind,
            hours_used=p.hours_used,
            included_hours=p.included_hours,
        )

    async def paid(tx: UnitOfWork, event: Envelope, p: ev.PaymentSucceeded) -> None:
        await clients.record_payment(
            tx,
            ctx,
            _person(event),
            amount=p.amount,
            currency=p.currency,
            days_late=p.days_late,
            invoice_id=p.invoice_id,
            invoice_paid=p.invoice_paid,
            paid_at=p.paid_at,
        )

    async def payment_failed(tx: UnitOfWork, event: Envelope, p: ev.PaymentFailed) -> None:
        await clients.record_payment_failure(tx, ctx, _person(event), hard=p.hard_decline)

    async def overdue(tx: UnitOfWork, event: Envelope, p: ev.InvoiceOverdue) -> None:
        await clients.record_overdue(tx, ctx, _person(event), invoice_id=p.invoice_id, days=p.days_overdue)

    async def voided(tx: UnitOfWork, event: Envelope, p: ev.InvoiceVoided) -> None:
        await clients.record_voided(tx, ctx, _person(event), invoice_id=p.invoice_id)

    async def dunning(tx: UnitOfWork, event: Envelope, p: ev.DunningStateChanged) -> None:
        await clients.record_dunning(tx, ctx, _person(event), to_state=p.to_state)

    async def hours(tx: UnitOfWork, event: Envelope, p: ev.HoursUsageReported) -> None:
        await clients.record_hours(
            tx, ctx, _person(event), used=p.used_hours, included=p.included_hours, overage=p.overage_hours
        )

    async def credit_note(tx: UnitOfWork, event: Envelope, p: ev.CreditNoteIssued) -> None:
        await clients.record_credit_note(
            tx, ctx, _person(event), invoice_id=p.invoice_id, refunded=p.refunded, currency=p.currency
        )

    async def deposit_cleared(tx: UnitOfWork, event: Envelope, p: ev.DepositCleared) -> None:
        await clients.become_client(tx, ctx, _person(event), cleared_at=p.cleared_at)

    async def started(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionStarted) -> None:
        await subscriptions.start_subscription(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            deal_id=p.deal_id,
            monthly_fee=p.monthly_fee,
            currency=p.currency,
            started_at=p.started_at,
            included_hours=p.included_hours,
        )

    async def paused(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionPaused) -> None:
        await subscriptions.pause_subscription(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            paused_fee=p.paused_fee,
            currency=p.currency,
            until=p.until,
        )

    async def resumed(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionResumed) -> None:
        await subscriptions.resume_subscription(tx, ctx, _person(event), subscription_id=p.subscription_id)

    async def cancelled(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionCancelled) -> None:
        await subscriptions.cancel_subscription(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            reason=p.reason,
            effective_at=p.effective_at,
            monthly_fee=p.monthly_fee,
            currency=p.currency,
        )

    async def price_change(tx: UnitOfWork, event: Envelope, p: ev.PriceChangeScheduled) -> None:
        await subscriptions.schedule_price_change(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            new_price=p.new_price,
            percent=p.percent,
            effective_at=p.effective_at,
        )

    async def price_changed(tx: UnitOfWork, event: Envelope, p: ev.SubscriptionPriceChanged) -> None:
        await subscriptions.change_fee(
            tx,
            ctx,
            _person(event),
            subscription_id=p.subscription_id,
            reason=p.reason,
            old_fee=p.old_fee,
            new_fee=p.new_fee,
            currency=p.currency,
            effective_at=p.effective_at,
        )

    async def change_requested(tx: UnitOfWork, event: Envelope, p: ev.DealChangeRequested) -> None:
        await clients.record_change_request(
            tx, ctx, _person(event), in_scope=p.in_scope, amount=p.amount, hours=p.hours, currency=p.currency
        )

    async def feedback(tx: UnitOfWork, event: Envelope, p: ev.FeedbackReceived) -> None:
        await clients.record_feedback(
            tx, ctx, _person(event), score=p.score, complaint=p.complaint, replaces=p.replaces
        )

    async def engagement(tx: UnitOfWork, event: Envelope, _p: Any) -> None:
        await clients.record_engagement(tx, ctx, _person(event), event_type=event.type)

    async def takeover(tx: UnitOfWork, event: Envelope, _p: Any) -> None:
        await clients.record_takeover(tx, ctx, _person(event), started=event.type == "takeover.started")

    async def erased(tx: UnitOfWork, event: Envelope, p: ev.LeadErased) -> None:
        await clients.erase_client(tx, ctx, _person(event), requested_at=p.requested_at)
        await termination.erase_comment(tx, _person(event))
        await notes.erase_notes(tx, _person(event))
        await manual_tier.erase_reason(tx, _person(event))

    return {
        "lead.captured": captured,
        "lead.assigned": assigned,
        "lead.qualified": qualified,
        "lead.erased": erased,
        "channel.spend_recorded": spend,
        "deal.proposed": proposed,
        "deal.won": deal_won,
        "deal.change_requested": change_requested,
        "email.opened": engagement,
        "email.clicked": engagement,
        "lead.unsubscribed": engagement,
        "feedback.received": feedback,
        "takeover.started": takeover,
        "takeover.ended": takeover,
        "invoice.issued": invoice_issued,
        "invoice.overdue": overdue,
        "invoice.voided": voided,
        "payment.succeeded": paid,
        "payment.failed": payment_failed,
        "deposit.cleared": deposit_cleared,
        "dunning.state_changed": dunning,
        "hours.usage_reported": hours,
        "credit_note.issued": credit_note,
        "subscription.started": started,
        "subscription.paused": paused,
        "subscription.resumed": resumed,
        "subscription.cancelled": cancelled,
        "price.change_scheduled": price_change,
        "subscription.price_changed": price_changed,
    }


def own_handlers() -> dict[str, Handler]:
    """Replay only: retention's own events are the record of what it decided (tiers a review
    gave, referrals, points, cancellations); a rebuild reads them back instead of re-deciding."""

    async def tier(tx: UnitOfWork, event: Envelope, p: ev.ClientTierChanged) -> None:
        await tiers.replay_tier(tx, _person(event), to_tier=p.to_tier, reasons=p.reasons, computed_tier=p.computed_tier)

    async def referral(tx: UnitOfWork, event: Envelope, p: ev.ReferralMade) -> None:
        await loyalty.replay_referral(tx, _person(event), p)

    async def points(tx: UnitOfWork, event: Envelope, p: ev.LoyaltyPointsAwarded) -> None:
        await loyalty.replay_points(tx, _person(event), p)

    async def cancellation(tx: UnitOfWork, event: Envelope, p: Any) -> None:
        await cancellations.replay_cancellation(tx, _person(event), event.type, p)

    async def terminated(tx: UnitOfWork, event: Envelope, p: ev.ClientTerminated) -> None:
        await termination.replay_termination(tx, _person(event), p)

    async def rate(tx: UnitOfWork, event: Envelope, p: ev.ExchangeRateSet) -> None:
        await rates.replay_rate(tx, p)

    async def set_manually(tx: UnitOfWork, event: Envelope, p: ev.ClientTierSetManually) -> None:
        await manual_tier.replay_manual(tx, _person(event), p)

    return {
        "client.tier_set_manually": set_manually,
        "exchange_rate.set": rate,
        "client.terminated": terminated,
        "client.tier_changed": tier,
        "referral.made": referral,
        "loyalty.points_awarded": points,
        "cancellation.requested": cancellation,
        "cancellation.saved": cancellation,
        "cancellation.completed": cancellation,
    }


# Whose loyalty award an event reads (by the invoice it names).
AWARD_EVENTS = ("payment.succeeded", "invoice.voided", "credit_note.issued")


def prefetch_for(ctx: Context) -> Prefetch:
    """What a batch's handlers will read, named from its events (see ``record.prefetch``)."""

    async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
        paying: set[uuid.UUID] = set()
        invoice_ids: set[uuid.UUID] = set()
        for event in events:
            if event.type not in AWARD_EVENTS:
                continue
            p = event.payload()
            assert isinstance(p, (ev.PaymentSucceeded, ev.InvoiceVoided, ev.CreditNoteIssued))
            if p.invoice_id is not None:
                invoice_ids.add(p.invoice_id)
                if isinstance(p, ev.PaymentSucceeded) and p.invoice_paid and event.lead_id is not None:
                    paying.add(event.lead_id)
        await record.prefetch(
            tx,
            ctx,
            lead_ids={e.lead_id for e in events if e.lead_id is not None and e.type != "channel.spend_recorded"},
            paying=paying,
            invoice_ids=invoice_ids,
        )

    return prefetch


def register(runtime: ServiceRuntime, ctx: Context) -> None:
    """Consume every event type retention learns from, a batch a transaction, and answer the
    exports leads asks for (not in ``handlers_for``: a replay answers none)."""

    async def export_requested(tx: UnitOfWork, event: Envelope, p: ev.ExportRequested) -> None:
        if event.lead_id is not None and not event.shredded:
            await export.export_person(tx, export_id=p.export_id, lead_id=event.lead_id)

    runtime.consume({**handlers_for(ctx), "export.requested": export_requested}, prefetch=prefetch_for(ctx))

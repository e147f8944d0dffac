"""Cancellations: a client asks to leave and is offered a pause or a discount first
(domain/offers.py), then takes the offer or confirms; a client whose last subscription billing
ended without that flow (dunning gave up) has left all the same.

Every outcome is counted once committed, whichever path decided it (RetentionMetrics.count_emitted).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.retention import domain, record
from services.retention.context import Context
from services.retention.store import Cancellation, Client, Subscription
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork


def _offer_payload(offer: domain.Offer) -> ev.SaveOffer:
    return ev.SaveOffer(
        kind=offer.kind,
        fee=offer.fee,
        discount_percent=offer.discount_percent,
        months=offer.months,
        currency=offer.currency,
        description=offer.description,
        included_hours=offer.included_hours,
    )


async def request_cancellation(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, reason: str, comment: str | None
) -> Cancellation:
    """A client asks to cancel: record it with the save offer its tier and health earn
    (``cancellation.requested``). Only a running (active or paused) subscription can be
    cancelled, and one request at a time."""
    client = await tx.session.get(Client, lead_id, with_for_update=True)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    subscription = await tx.session.scalar(
        select(Subscription)
        .where(Subscription.lead_id == lead_id, Subscription.status.in_(domain.RUNNING))
        .order_by(Subscription.started_at.desc().nulls_last(), Subscription.id)
        .limit(1)
    )
    if subscription is None:
        raise Conflict(
            f"client {lead_id} has no active or paused subscription to cancel"
            f" (subscription status: {client.subscription_status})"
        )
    open_request = await tx.session.scalar(
        select(Cancellation.id).where(Cancellation.lead_id == lead_id, Cancellation.status == "requested")
    )
    if open_request is not None:
        raise Conflict(f"cancellation {open_request} of client {lead_id} is still open: accept its offer or confirm it")
    offer = domain.choose_offer(
        tier=client.tier,
        band=client.band,
        reason=reason,
        monthly_fee=subscription.monthly_fee,
        currency=subscription.currency,
        policy=ctx.settings.offers,
        included_hours=client.hours_included,
    )
    payload = _offer_payload(offer)
    cancellation = Cancellation(
        id=time_ordered_id(),
        lead_id=lead_id,
        subscription_id=subscription.id,
        reason=reason,
        comment=comment,
        offer=payload.model_dump(mode="json"),
        status="requested",
        created_at=tx.now(),
    )
    tx.session.add(cancellation)
    tx.emit(
        "cancellation.requested",
        ev.CancellationRequested(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            reason=reason,
            comment=comment,
            offer=payload,
        ),
        lead_id=lead_id,
    )
    return cancellation


async def get_cancellation(tx: UnitOfWork, cancellation_id: uuid.UUID, *, lock: bool = False) -> Cancellation:
    """A cancellation request and how it ended, or ``NotFound``."""
    cancellation = await tx.session.get(Cancellation, cancellation_id, with_for_update=lock)
    if cancellation is None:
        raise NotFound(f"no cancellation {cancellation_id}")
    return cancellation


async def tailor_offer(
    tx: UnitOfWork,
    cancellation_id: uuid.UUID,
    *,
    kind: str,
    discount_percent: Decimal | None,
    fee: Decimal | None,
    months: int,
    included_hours: Decimal | None,
) -> Cancellation:
    """A person replaces the save offer of an open cancellation with one tailored for the client
    (a counter-offer), before the client answers. It travels in ``cancellation.saved`` once
    accepted (billing bills what was accepted; a replay rebuilds it from there)."""
    cancellation = await get_cancellation(tx, cancellation_id, lock=True)
    if cancellation.status != "requested":
        raise Conflict(f"cancellation {cancellation_id} is {cancellation.status}; only an open one takes a new offer")
    subscription = (
        await tx.session.get(Subscription, cancellation.subscription_id) if cancellation.subscription_id else None
    )
    if subscription is None or subscription.status != "active":
        raise Conflict(f"cancellation {cancellation_id}: the subscription is not active; a tailored offer needs one")
    client = await tx.session.get(Client, cancellation.lead_id)
    try:
        offer = domain.tailored_offer(
            kind=kind,
            monthly_fee=subscription.monthly_fee,
            currency=subscription.currency,
            discount_percent=discount_percent,
            fee=fee,
            months=months,
            included_hours=included_hours if included_hours is not None else None,
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    if offer.kind == "downgrade" and offer.included_hours is None and client is not None and client.hours_included:
        raise Invalid("included_hours: a downgrade of a retainer with included hours names the smaller plan's hours")
    cancellation.offer = _offer_payload(offer).model_dump(mode="json")
    return cancellation


async def accept_offer(tx: UnitOfWork, ctx: Context, cancellation_id: uuid.UUID) -> Cancellation:
    """The client takes the save offer (``cancellation.saved``; billing pauses or discounts).
    A repeat answers the same and emits nothing."""
    cancellation = await get_cancellation(tx, cancellation_id, lock=True)
    if cancellation.status == "saved":
        return cancellation
    if cancellation.status != "requested":
        raise Conflict(f"cancellation {cancellation_id} is {cancellation.status}; only a requested one can be saved")
    if cancellation.offer.get("kind") == "none":
        raise Conflict(f"cancellation {cancellation_id} has no save offer to accept; confirm it instead")
    cancellation.status = "saved"
    cancellation.decided_at = tx.now()
    tx.emit(
        "cancellation.saved",
        ev.CancellationSaved(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            offer=ev.SaveOffer.model_validate(cancellation.offer),
        ),
        lead_id=cancellation.lead_id,
    )
    # ``cancellation.saved`` does not carry the reason the count is labelled with (and the
    # contract is fixed): this one is counted by the transaction itself, once committed.
    reason = cancellation.reason
    tx.after_commit(lambda: ctx.metrics.count_cancellation(reason, "saved"))
    return cancellation


async def confirm_cancellation(tx: UnitOfWork, cancellation_id: uuid.UUID) -> Cancellation:
    """The client declines the offer and leaves (``cancellation.completed``, effective now;
    billing ends the subscription). A repeat answers the same and emits nothing."""
    cancellation = await get_cancellation(tx, cancellation_id, lock=True)
    if cancellation.status == "completed":
        return cancellation
    if cancellation.status != "requested":
        raise Conflict(
            f"cancellation {cancellation_id} was {cancellation.status} by its offer;"
            " a client who still wants to leave asks for a new cancellation"
        )
    now = tx.now()
    cancellation.status = "completed"
    cancellation.decided_at = now
    tx.emit(
        "cancellation.completed",
        ev.CancellationCompleted(
            cancellation_id=cancellation.id,
            subscription_id=cancellation.subscription_id,
            reason=cancellation.reason,
            effective_at=now,
        ),
        lead_id=cancellation.lead_id,
    )
    return cancellation


async def ended_by_billing(tx: UnitOfWork, sub: Subscription, *, reason: str | None, effective_at: datetime) -> None:
    """The client's last subscription ended without a cancellation the client completed here
    (billing's dunning gave up on an unpaid invoice): the client is gone all the same, so it
    is recorded and announced as a completed cancellation (``cancellation.completed``, counted
    like one confirmed over HTTP), which moves the lead to `churned` like any other leaver;
    billing has nothing left to end. Its id derives from the subscription, so a replay
    rebuilds the same record."""
    started = sub.started_at or effective_at
    completed = await tx.session.scalar(
        select(Cancellation.id)
        .where(
            Cancellation.lead_id == sub.lead_id,
            Cancellation.status == "completed",
            (Cancellation.subscription_id == sub.id)
            | (Cancellation.subscription_id.is_(None) & (Cancellation.decided_at >= started)),
        )
        .limit(1)
    )
    if completed is not None:
        return
    why = (reason or "ended")[:40]
    cancellation_id = uuid.uuid5(sub.id, "ended-without-the-flow")
    if await tx.session.get(Cancellation, cancellation_id) is None:
        tx.session.add(
            Cancellation(
                id=cancellation_id,
                lead_id=sub.lead_id,
                subscription_id=sub.id,
                reason=why,
                comment=None,
                offer=_offer_payload(domain.ENDED_BY_BILLING).model_dump(mode="json"),
                status="completed",
                created_at=effective_at,
                decided_at=effective_at,
            )
        )
    tx.emit(
        "cancellation.completed",
        ev.CancellationCompleted(
            cancellation_id=cancellation_id, subscription_id=sub.id, reason=why, effective_at=effective_at
        ),
        lead_id=sub.lead_id,
    )


async def replay_cancellation(tx: UnitOfWork, lead_id: uuid.UUID, event_type: str, p: ev.Payload) -> None:
    """Rebuild: a cancellation and its outcome (its events are the record of them)."""
    await record.client(tx, lead_id)
    assert isinstance(p, (ev.CancellationRequested, ev.CancellationSaved, ev.CancellationCompleted))
    cancellation = await tx.session.get(Cancellation, p.cancellation_id)
    if isinstance(p, ev.CancellationRequested):
        if cancellation is None:
            tx.session.add(
                Cancellation(
                    id=p.cancellation_id,
                    lead_id=lead_id,
                    subscription_id=p.subscription_id,
                    reason=p.reason,
                    comment=p.comment,
                    offer=p.offer.model_dump(mode="json"),
                    status="requested",
                    created_at=record.when(tx),
                )
            )
        return
    status = "saved" if event_type == "cancellation.saved" else "completed"
    # A cancellation the replay already rebuilt as decided (one billing ended without the flow:
    # recorded at the subscription's end, announced when it was processed) keeps its moment.
    if cancellation is not None and cancellation.status != status:
        cancellation.status = status
        cancellation.decided_at = record.when(tx)
    if cancellation is not None and isinstance(p, ev.CancellationSaved):
        cancellation.offer = p.offer.model_dump(mode="json")  # the offer taken (maybe a tailored one)

"""Export on request (``export.requested``): retention's part of everything held about a person
(``services/leads/exports.py`` gathers the rest)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select

from services.retention.store import (
    Cancellation,
    Client,
    ClientEvent,
    ClientMoney,
    ClientNote,
    HealthPoint,
    LoyaltyAward,
    ManualTierRow,
    MrrMovement,
    Referral,
    Subscription,
    Termination,
    TierReview,
)
from shared.exports import answer, audit_rows, jsonable, row, rows
from shared.uow import UnitOfWork


async def export_person(tx: UnitOfWork, *, export_id: uuid.UUID, lead_id: uuid.UUID) -> None:
    """Answer an export with what retention holds about the person: the client record with its
    health and factors, the health history, tiers (the review entries naming them and a tier
    set by hand), notes, money, subscriptions, MRR movements, cancellations, terminations,
    referrals, loyalty, the timeline of events and the audit trail."""

    async def of(table: Any, *order: Any) -> list[Any]:
        return list(await tx.session.scalars(select(table).where(table.lead_id == lead_id).order_by(*order)))

    client = await tx.session.get(Client, lead_id)
    manual = await tx.session.get(ManualTierRow, lead_id)
    referrals = await tx.session.scalars(
        select(Referral)
        .where(or_(Referral.referrer_id == lead_id, Referral.referred_lead_id == lead_id))
        .order_by(Referral.created_at)
    )
    part = {
        "client": row(client) if client is not None else None,
        "health_history": rows(await of(HealthPoint, HealthPoint.at)),
        "tier_reviews": await _reviews_naming(tx, lead_id),
        "manual_tier": row(manual) if manual is not None else None,
        "notes": rows(await of(ClientNote, ClientNote.created_at)),
        "money": rows(await of(ClientMoney, ClientMoney.measure, ClientMoney.currency)),
        "subscriptions": rows(await of(Subscription, Subscription.started_at)),
        "mrr_movements": rows(await of(MrrMovement, MrrMovement.at, MrrMovement.id)),
        "cancellations": rows(await of(Cancellation, Cancellation.created_at)),
        "terminations": rows(await of(Termination, Termination.created_at)),
        "referrals": rows(referrals),
        "loyalty": rows(await of(LoyaltyAward, LoyaltyAward.due_at)),
        "timeline": rows(await of(ClientEvent, ClientEvent.at, ClientEvent.id)),
        "audit": await audit_rows(tx, lead_id),
    }
    answer(tx, export_id=export_id, lead_id=lead_id, service="retention", part=part)


async def _reviews_naming(tx: UnitOfWork, lead_id: uuid.UUID) -> list[dict[str, Any]]:
    """Each tier review's entries about the person (a review lists many clients)."""
    wanted = str(lead_id)
    out = []
    for review in await tx.session.scalars(select(TierReview).order_by(TierReview.at)):
        entries = list(_naming(review.result, wanted))
        if entries:
            out.append({"review_id": review.id, "period": review.period, "at": review.at, "entries": entries})
    return jsonable(out)


def _naming(value: Any, lead_id: str) -> Any:
    """Every object in ``value`` whose ``lead_id`` is the person's, wherever it is nested."""
    if isinstance(value, dict):
        if str(value.get("lead_id")) == lead_id:
            yield value
            return
        for inner in value.values():
            yield from _naming(inner, lead_id)
    elif isinstance(value, list):
        for inner in value:
            yield from _naming(inner, lead_id)

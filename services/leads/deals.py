"""Deals: estimates written for a lead, won (signed, with the deposit share their risk asks)
or lost, and the change requests on a signed deal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select

from services.leads import domain, sales
from services.leads.commands import ChangeRequestIn, DealIn
from services.leads.context import Context
from services.leads.domain import estimates as estimate_rules
from services.leads.funnel import follow
from services.leads.qualification import raise_red_flag
from services.leads.record import get_lead, lead_for_event
from services.leads.store import ChangeRequest, Deal, EstimateVersion
from services.leads.timeline import log_activity
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

# How far in the future a signature may be dated (clocks of the people signing differ).
SIGNED_AT_TOLERANCE = timedelta(minutes=5)


def _deal_fields(deal: Deal) -> dict[str, Any]:
    return {
        "deal_id": deal.id,
        "title": deal.title,
        "kind": deal.kind,
        "currency": deal.currency,
        "lines": [ev.ScopeLine.model_validate(line) for line in deal.lines],
        "total": deal.total,
        "monthly_fee": deal.monthly_fee,
        "included_hours": deal.included_hours,
        "hourly_rate": deal.hourly_rate,
        "owner_id": deal.owner_id,
        "submission_deadline": deal.submission_deadline,
        "version": deal.version,
        "digest": deal.digest,
        "valid_until": deal.valid_until,
    }


# The fields every deal event carries (deal.proposed, deal.revised, deal.won).
deal_fields = _deal_fields


@dataclass(frozen=True)
class Signing:
    """How an estimate was signed: by staff (a name typed in on the client's behalf) or by the
    client through the acceptance link, from an address, on one version and its digest."""

    via: Literal["staff", "link"] = "staff"
    ip: str | None = None
    version: int | None = None
    digest: str | None = None


STAFF = Signing()


def acceptance_link(ctx: Context, deal: Deal) -> str | None:
    """The signed public link of the deal's latest version while it is proposed (None for a deal
    written before links, or no longer open)."""
    if deal.valid_until is None or deal.status != "proposed":
        return None
    return estimate_rules.acceptance_url(
        ctx.settings.public_url,
        secret=ctx.settings.secret_key.get_secret_value(),
        deal_id=deal.id,
        version=deal.version,
        expires_at=deal.valid_until,
    )


def write_version(tx: UnitOfWork, ctx: Context, deal: Deal, *, valid_until: datetime | None) -> EstimateVersion:
    """Give the deal's current content its expiry (the one asked, in the future, or the default)
    and digest, and keep it as version ``deal.version``."""
    try:
        deal.valid_until = estimate_rules.valid_until_for(valid_until, now=tx.now(), policy=ctx.settings.estimate)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    content = estimate_rules.content_of(
        title=deal.title,
        kind=deal.kind,
        currency=deal.currency,
        lines=deal.lines,
        total=deal.total,
        monthly_fee=deal.monthly_fee,
        included_hours=deal.included_hours,
        hourly_rate=deal.hourly_rate,
        valid_until=deal.valid_until,
    )
    deal.digest = estimate_rules.digest_of(content)
    row = EstimateVersion(
        deal_id=deal.id,
        version=deal.version,
        content=content,
        digest=deal.digest,
        created_at=tx.now(),
        valid_until=deal.valid_until,
    )
    tx.session.add(row)
    return row


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> Deal:
    """The deal; ``NotFound`` when there is none."""
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id}")
    return deal


async def deals_of(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Deal]:
    """The lead's deals, oldest first."""
    rows = await tx.session.scalars(select(Deal).where(Deal.lead_id == lead_id).order_by(Deal.created_at, Deal.id))
    return list(rows)


async def change_requests_of(tx: UnitOfWork, deal_id: uuid.UUID) -> list[ChangeRequest]:
    """The deal's change requests, oldest first."""
    rows = await tx.session.scalars(
        select(ChangeRequest)
        .where(ChangeRequest.deal_id == deal_id)
        .order_by(ChangeRequest.created_at, ChangeRequest.id)
    )
    return list(rows)


async def propose_deal(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, data: DealIn) -> Deal:
    """Write an estimate for a lead (``deal.proposed``)."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased; a deal needs a person")
    if lead.merged_into is not None:
        raise Conflict(f"lead {lead_id} was merged into {lead.merged_into}; write the estimate there")
    from services.leads import returning  # the returning-client surcharge (one hook: deals.py is shared)

    data = await returning.apply_surcharge(lead, data)
    deal = Deal(
        id=time_ordered_id(),
        lead_id=lead.id,
        title=data.title,
        kind=data.kind,
        currency=data.currency,
        lines=[line.model_dump(mode="json") for line in data.lines],
        total=data.total,
        monthly_fee=data.monthly_fee,
        included_hours=data.included_hours,
        hourly_rate=data.hourly_rate,
        status="proposed",
        created_at=tx.now(),
        owner_id=lead.owner_id,
        submission_deadline=data.submission_deadline,
        version=1,
    )
    if data.submission_deadline is not None and data.submission_deadline <= tx.now():
        raise Invalid("submission_deadline: a tender's deadline must be in the future")
    tx.session.add(deal)
    write_version(tx, ctx, deal, valid_until=data.valid_until)
    tx.emit(
        "deal.proposed",
        ev.DealProposed(**_deal_fields(deal), acceptance_url=acceptance_link(ctx, deal)),
        lead_id=lead.id,
    )
    log_activity(
        tx, lead.id, "deal.proposed", deal_id=deal.id, title=deal.title, total=deal.total, currency=deal.currency
    )
    await follow(tx, lead, "deal.proposed")
    return deal


async def win_deal(
    tx: UnitOfWork,
    ctx: Context,
    deal_id: uuid.UUID,
    *,
    signed_by: str,
    signed_at: datetime | None,
    signing: Signing = STAFF,
) -> Deal:
    """A signed estimate becomes a won deal (``deal.won``) with the deposit share its risk asks
    (``domain.deposit``): no signature, no deal. ``signing`` says how: staff recording it, or the
    client through the acceptance link (the version and digest of what they read). An estimate
    past its ``valid_until`` is revised before it is won. A client's second won deal is a repeat deal."""
    deal = await get_deal(tx, deal_id)
    if deal.status == "won":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be won")
    if not signed_by.strip():
        raise Invalid("signed_by is required: no signature, no deal")
    now = tx.now()
    if deal.valid_until is not None and now > deal.valid_until:
        raise Conflict(
            f"valid_until: the estimate expired on {deal.valid_until.isoformat()}; revise it first "
            f"(POST /deals/{deal_id}/revisions)"
        )
    if signed_at is not None and signed_at > now + SIGNED_AT_TOLERANCE:
        raise Invalid(f"signed_at {signed_at.isoformat()} is in the future; an estimate is won once it is signed")
    lead = await get_lead(tx, deal.lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead.id} was erased; a deal needs a person")
    share = ctx.settings.deposit.share(lead.red_flag_names, fit=lead.fit_score, tier=lead.tier)
    earlier_wins = await tx.session.scalar(
        select(func.count()).select_from(Deal).where(Deal.lead_id == lead.id, Deal.status == "won")
    )
    deal.status = "won"
    deal.signed_by = signed_by.strip()
    deal.signed_at = signed_at or now
    deal.deposit_share = share
    deal.signed_via = signing.via
    deal.signed_ip = signing.ip
    deal.accepted_version = signing.version or deal.version
    deal.accepted_digest = signing.digest or deal.digest
    tx.emit(
        "deal.won",
        ev.DealWon(
            **_deal_fields(deal),
            signed_by=deal.signed_by,
            signed_at=deal.signed_at,
            deposit_share=share,
            red_flags=lead.red_flag_names,
            fit_score=lead.fit_score,
            channel=lead.channel,
            tier=lead.tier,
            signed_via=signing.via,
            signed_ip=signing.ip,
        ),
        lead_id=lead.id,
    )
    log_activity(
        tx,
        lead.id,
        "deal.won",
        deal_id=deal.id,
        signed_by=deal.signed_by,
        signed_via=signing.via,
        version=deal.accepted_version,
        deposit_share=share,
        total=deal.total,
        currency=deal.currency,
    )
    if earlier_wins:
        await follow(tx, lead, "repeat_deal.won")
    await sales.hand_off(tx, ctx, lead)
    return deal


async def lose_deal(tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, *, reason: str) -> Deal:
    """A proposed deal was lost (``deal.lost``), with why; losing it again changes nothing."""
    deal = await get_deal(tx, deal_id)
    if deal.status == "lost":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be lost")
    deal.status = "lost"
    deal.lost_reason = reason
    tx.emit("deal.lost", ev.DealLost(deal_id=deal.id, reason=reason), lead_id=deal.lead_id)
    log_activity(tx, deal.lead_id, "deal.lost", deal_id=deal.id, reason=reason)
    total, currency = deal.total, deal.currency
    # The count of lost deals comes from the event; their value is not in it, so counted here.
    tx.after_commit(lambda: ctx.metrics.deal_value.labels("lost", currency).inc(float(total)))
    return deal


async def request_change(tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, data: ChangeRequestIn) -> ChangeRequest:
    """A change asked for during the work, checked against the estimate's lines: in scope (free)
    or a paid change order (``deal.change_requested``; billing issues the change order)."""
    deal = await get_deal(tx, deal_id)
    if deal.status != "won":
        raise Conflict(f"deal {deal_id} is {deal.status}; change requests apply to a signed (won) deal")
    if data.currency is not None and data.currency != deal.currency:
        raise Invalid(f"currency {data.currency} differs from the deal's {deal.currency}")
    lead = await get_lead(tx, deal.lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead.id} was erased")
    earlier = list(await tx.session.scalars(select(ChangeRequest).where(ChangeRequest.deal_id == deal.id)))
    try:
        decision = domain.assess_change(
            deal.lines,
            description=data.description,
            hours=data.hours,
            amount=data.amount,
            hourly_rate=deal.hourly_rate,
            used_hours=domain.hours_used((cr.in_scope, cr.line, cr.hours) for cr in earlier),
            line=data.line,
            in_scope=data.in_scope,
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    request = ChangeRequest(
        id=time_ordered_id(),
        deal_id=deal.id,
        description=data.description,
        line=decision.line,
        in_scope=decision.in_scope,
        hours=decision.hours,
        amount=decision.amount,
        currency=deal.currency,
        reason=decision.reason,
        created_at=tx.now(),
    )
    tx.session.add(request)
    tx.emit(
        "deal.change_requested",
        ev.DealChangeRequested(
            deal_id=deal.id,
            request_id=request.id,
            description=data.description,
            in_scope=decision.in_scope,
            hours=decision.hours,
            amount=decision.amount,
            currency=deal.currency,
        ),
        lead_id=lead.id,
    )
    log_activity(
        tx,
        lead.id,
        "deal.change_requested",
        deal_id=deal.id,
        request_id=request.id,
        in_scope=decision.in_scope,
        amount=decision.amount,
        reason=decision.reason,
    )
    requests = len(earlier) + 1
    if domain.changes_mind_often(requests, after=ctx.settings.changes_mind_after):
        await raise_red_flag(
            tx,
            lead,
            name="changes_mind_often",
            evidence=f"{requests} change requests on deal {deal.id}",
            source="change_requests",
        )
    return request


async def tier_changed(tx: UnitOfWork, event: ev.Envelope, data: ev.ClientTierChanged) -> None:
    """Retention reviewed the client's tier: kept on the lead (the next deposit share reads it)."""
    lead = await lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    lead.tier = data.to_tier
    lead.tier_reasons = list(data.reasons)
    lead.updated_at = tx.now()
    log_activity(
        tx, lead.id, "client.tier_changed", from_tier=data.from_tier, to_tier=data.to_tier, reasons=data.reasons or None
    )

"""Engagement and consent: signals from nurture (opens, clicks, replies, feedback, a human
taking over, sales readiness, unsubscribes) on the lead's one engagement score and stage."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from services.leads.context import Context
from services.leads.funnel import follow
from services.leads.record import lead_for_event
from services.leads.store import Lead
from services.leads.timeline import log_activity
from shared import events as ev
from shared.uow import UnitOfWork


def engagement_now(ctx: Context, lead: Lead, now: datetime) -> int:
    """The lead's engagement score, 0-100, decayed to ``now``."""
    return ctx.settings.engagement.score(lead.engagement_points or Decimal(0), since=lead.engagement_at, now=now)


async def record_engagement(tx: UnitOfWork, ctx: Context, event: ev.Envelope, **detail: Any) -> None:
    """An open, click, reply, feedback or a human taking over: engagement points that fade over
    time (kept apart from fit); a click, reply or feedback also shows interest."""
    lead = await lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    lead.engagement_points, lead.engagement_at = ctx.settings.engagement.signal(
        lead.engagement_points or Decimal(0),
        since=lead.engagement_at,
        at=min(event.occurred_at, tx.now()),
        kind=event.type,
    )
    lead.engagement_score = engagement_now(ctx, lead, tx.now())
    lead.updated_at = tx.now()
    log_activity(tx, lead.id, event.type, engagement_score=lead.engagement_score, **detail)
    await follow(tx, lead, event.type)


async def sales_ready(tx: UnitOfWork, ctx: Context, event: ev.Envelope, data: ev.LeadSalesReady) -> None:
    """Nurture says the lead is warm enough for sales: the stage moves to consideration, and
    nurture's score may lift the lead's (see ``EngagementPolicy.lifted_by_nurture`` for why)."""
    lead = await lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    lifted = ctx.settings.engagement.lifted_by_nurture(
        lead.engagement_points or Decimal(0), since=lead.engagement_at, now=tx.now(), reported=data.engagement_score
    )
    if lifted is not None:
        lead.engagement_points, lead.engagement_at = lifted
        lead.engagement_score = data.engagement_score
    log_activity(tx, lead.id, "lead.sales_ready", engagement_score=data.engagement_score, reason=data.reason)
    await follow(tx, lead, "lead.sales_ready")


async def unsubscribed(tx: UnitOfWork, event: ev.Envelope, data: ev.LeadUnsubscribed) -> None:
    """The person unsubscribed: from email, their marketing consent is off."""
    lead = await lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    if data.channel == "email":
        lead.consent_marketing = False
    lead.updated_at = tx.now()
    log_activity(tx, lead.id, "lead.unsubscribed", channel=data.channel)

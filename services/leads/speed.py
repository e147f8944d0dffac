"""Speed to lead, on the business clock: every open lead nobody reached by its first-touch
deadline is escalated to an admin (once), and a tender's owner is reminded before its
submission deadline. Both are scheduled passes with poison isolation (``shared.jobs``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from services.leads.context import Context
from services.leads.record import get_lead
from services.leads.sales import OPEN_STAGES, admin_on_duty, raise_task
from services.leads.store import Deal, Lead
from services.leads.timeline import log_activity
from shared.jobs import Pass
from shared.uow import UnitOfWork, UnitOfWorkFactory
from shared.zones import zone

SPEED_JOB = "leads.speed_to_lead"
TENDER_JOB = "leads.tender_reminders"


async def escalate_overdue(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> Pass[uuid.UUID, bool]:
    """Every open lead nobody reached by its first-touch deadline: an escalation task for an
    admin, once. A lead the pass fails on is kept aside (job ``leads.speed_to_lead``)."""
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(Lead.id)
                .where(
                    Lead.first_touch_due_at <= now,
                    Lead.first_touched_at.is_(None),
                    Lead.escalated_at.is_(None),
                    Lead.stage.in_(OPEN_STAGES),
                    Lead.merged_into.is_(None),
                    Lead.erased_at.is_(None),
                )
                .order_by(Lead.first_touch_due_at)
                .limit(1000)
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Lead]:
        rows = await tx.session.scalars(select(Lead).where(Lead.id.in_(ids), Lead.escalated_at.is_(None)))
        return {r.id: r for r in rows}

    async def escalate(tx: UnitOfWork, lead: Lead) -> bool:
        policy = ctx.settings.sales
        lead.escalated_at = now
        late = now - lead.first_touch_due_at if lead.first_touch_due_at else timedelta(0)
        raise_task(
            tx,
            lead_id=lead.id,
            kind="first_touch_overdue",
            title=f"Nobody has reached {lead.name or lead.email or lead.id} yet ({lead.channel})",
            source=f"first_touch:{lead.id}",
            owner_id=await admin_on_duty(tx),
            due_at=policy.business_hours().add(now, policy.escalation_due_hours, zone(lead.timezone)),
            detail=f"owner {lead.owner_id or 'none'}; first touch was due {lead.first_touch_due_at:%Y-%m-%d %H:%M} UTC"
            f" ({int(late.total_seconds() // 60)} min ago)",
        )
        log_activity(tx, lead.id, "first_touch.overdue", owner_id=lead.owner_id)
        return True

    return await ctx.jobs(SPEED_JOB).run(uow, due, escalate, now=now, load=load)


async def remind_tenders(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> Pass[uuid.UUID, bool]:
    """A proposed tender whose submission deadline is near: a reminder task for its owner, once."""
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(Deal.id).where(
                    Deal.status == "proposed",
                    Deal.submission_deadline.is_not(None),
                    Deal.reminded_at.is_(None),
                )
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Deal]:
        rows = await tx.session.scalars(select(Deal).where(Deal.id.in_(ids), Deal.reminded_at.is_(None)))
        return {r.id: r for r in rows}

    async def remind(tx: UnitOfWork, deal: Deal) -> bool:
        lead = await get_lead(tx, deal.lead_id)
        assert deal.submission_deadline is not None
        remind_at = _before(ctx, deal.submission_deadline, lead.timezone)
        if now < remind_at:
            return False
        deal.reminded_at = now
        raise_task(
            tx,
            lead_id=lead.id,
            kind="tender_deadline",
            title=f"Tender {deal.title!r} is due {deal.submission_deadline:%Y-%m-%d %H:%M} UTC",
            source=f"tender:{deal.id}",
            owner_id=deal.owner_id or lead.owner_id,
            due_at=deal.submission_deadline,
        )
        return True

    return await ctx.jobs(TENDER_JOB).run(uow, due, remind, now=now, load=load)


def _before(ctx: Context, deadline: datetime, timezone: str | None) -> datetime:
    """The moment ``tender_reminder_hours`` business hours before ``deadline``."""
    policy = ctx.settings.sales
    return policy.business_hours().subtract(deadline, policy.tender_reminder_hours, zone(timezone))

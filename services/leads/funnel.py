"""The funnel: moving leads between stages (by hand or on another service's event), the
funnel report and the lead list with its filters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select

from services.leads import domain
from services.leads.context import Context
from services.leads.record import lead_for_event, live_lead
from services.leads.store import Lead, LeadRedFlag, StageChange
from services.leads.timeline import log_activity
from shared import events as ev
from shared.access.context import OwnerQuery
from shared.errors import Invalid
from shared.uow import UnitOfWork


async def move_stage(tx: UnitOfWork, lead: Lead, *, to_stage: str, cause: str) -> None:
    """Move the lead and say so (``lead.stage_changed``), with the cause in the history."""
    now = tx.now()
    previous = lead.stage
    lead.stage = to_stage
    lead.updated_at = now
    tx.session.add(StageChange(lead_id=lead.id, from_stage=previous, to_stage=to_stage, cause=cause, at=now))
    log_activity(tx, lead.id, "lead.stage_changed", from_stage=previous, to_stage=to_stage, cause=cause)
    tx.emit(
        "lead.stage_changed",
        ev.LeadStageChanged(from_stage=previous, to_stage=to_stage, cause=cause, owner_id=lead.owner_id),
        lead_id=lead.id,
    )


async def follow(tx: UnitOfWork, lead: Lead, cause: str) -> None:
    """Move the lead where ``cause`` takes it, if anywhere (see ``domain.next_stage``)."""
    target = domain.next_stage(lead.stage, cause)
    if target is not None:
        await move_stage(tx, lead, to_stage=target, cause=cause)


async def set_stage(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, stage: str, reason: str) -> Lead:
    """Sales moves a lead by hand, forwards or backwards (a churned client who is back)."""
    lead = await live_lead(tx, lead_id)
    if stage not in domain.STAGES:
        raise Invalid(f"unknown stage {stage!r}; known: {', '.join(domain.STAGES)}")
    if stage != lead.stage:
        await move_stage(tx, lead, to_stage=stage, cause=f"manual: {reason}")
    return lead


async def apply_stage_event(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID | None, cause: str, *, occurred_at: datetime | None = None
) -> None:
    """An event from another service that may move a lead in the funnel (not back out of a
    stage entered after the event happened: events on different topics arrive in any order)."""
    lead = await lead_for_event(tx, lead_id)
    if lead is None:
        return  # a person we never captured (or erased): nothing to move
    log_activity(tx, lead.id, cause)
    entered_at = None
    if domain.entry_time_matters(lead.stage):
        entered_at = await tx.session.scalar(
            select(StageChange.at)
            .where(StageChange.lead_id == lead.id, StageChange.to_stage == lead.stage)
            .order_by(StageChange.id.desc())
            .limit(1)
        )
    target = domain.next_stage(lead.stage, cause, occurred_at=occurred_at, entered_at=entered_at)
    if target is not None:
        await move_stage(tx, lead, to_stage=target, cause=cause)


# --------------------------------------------------------------------------- reports


async def funnel(
    tx: UnitOfWork, *, channel: str | None, since: date | None, until: date | None, grain: str, tz: tzinfo
) -> dict[str, Any]:
    """Counts by stage now, how many ever reached each stage, and the conversion between
    stages: overall, per channel and per period of capture."""
    if channel is not None and channel not in domain.CHANNELS:
        raise Invalid(f"unknown channel {channel!r}; known: {', '.join(sorted(domain.CHANNELS))}")
    if since and until and since > until:
        raise Invalid(f"from {since} is after to {until}")
    query = select(Lead.id, Lead.channel, Lead.created_at, Lead.stage).where(Lead.merged_into.is_(None))
    if channel:
        query = query.where(Lead.channel == channel)
    if since:
        query = query.where(Lead.created_at >= datetime.combine(since, datetime.min.time(), tz))
    if until:
        query = query.where(Lead.created_at < datetime.combine(until + timedelta(days=1), datetime.min.time(), tz))
    leads = (await tx.session.execute(query)).all()
    wanted = query.with_only_columns(Lead.id).subquery()
    history = await tx.session.execute(
        select(StageChange.lead_id, StageChange.to_stage).where(StageChange.lead_id.in_(select(wanted.c.id)))
    )
    reached: dict[uuid.UUID, list[str]] = {}
    for lead_id, stage in history.all():
        reached.setdefault(lead_id, []).append(stage)
    rows = [
        _FunnelRow(
            channel=ch, created_at=created, stage=stage, rank=domain.reached_rank([stage, *reached.get(lead_id, [])])
        )
        for lead_id, ch, created, stage in leads
    ]
    by_channel: dict[str, list[_FunnelRow]] = {}
    by_period: dict[str, list[_FunnelRow]] = {}
    for row in rows:
        by_channel.setdefault(row.channel, []).append(row)
        by_period.setdefault(domain.period_of(row.created_at, grain), []).append(row)
    return {
        **_summary(rows),
        "by_channel": {ch: _summary(sub) for ch, sub in sorted(by_channel.items())},
        "by_period": [{"period": p, **_summary(sub)} for p, sub in sorted(by_period.items())],
        "grain": grain,
    }


@dataclass(frozen=True)
class _FunnelRow:
    channel: str
    created_at: datetime
    stage: str
    rank: int


def _summary(rows: list[_FunnelRow]) -> dict[str, Any]:
    counts = domain.funnel_counts((row.stage, row.rank) for row in rows)
    return {
        "total": counts.total,
        "stages": counts.stages,
        "reached": counts.reached,
        "conversion": counts.conversion(),
        "overall_conversion": counts.overall(),
    }


@dataclass
class LeadFilter:
    stage: str | None = None
    tier: str | None = None
    channel: str | None = None
    min_fit: int | None = None
    red_flag: str | None = None
    q: str | None = None
    include_erased: bool = False
    owner: OwnerQuery | None = None  # one person's leads, or the pool's


_SORTS: dict[str, ColumnElement[Any]] = {
    "created_at": Lead.created_at.asc(),
    "-created_at": Lead.created_at.desc(),
    "fit_score": Lead.fit_score.asc(),
    "-fit_score": Lead.fit_score.desc(),
    "updated_at": Lead.updated_at.asc(),
    "-updated_at": Lead.updated_at.desc(),
}


async def list_leads(tx: UnitOfWork, f: LeadFilter, *, sort: str, limit: int, offset: int) -> tuple[list[Lead], int]:
    """Leads matching ``f`` (merged duplicates left out), one page in ``sort`` order, and how
    many match in all."""
    if f.stage is not None and f.stage not in domain.STAGES:
        raise Invalid(f"unknown stage {f.stage!r}; known: {', '.join(domain.STAGES)}")
    if f.tier is not None and f.tier not in domain.TIERS:
        raise Invalid(f"unknown tier {f.tier!r}; known: {', '.join(domain.TIERS)}")
    if f.channel is not None and f.channel not in domain.CHANNELS:
        raise Invalid(f"unknown channel {f.channel!r}; known: {', '.join(sorted(domain.CHANNELS))}")
    if f.red_flag is not None and f.red_flag not in domain.RED_FLAGS:
        raise Invalid(f"unknown red flag {f.red_flag!r}; known: {', '.join(domain.RED_FLAGS)}")
    if sort not in _SORTS:
        raise Invalid(f"unknown sort {sort!r}; known: {', '.join(_SORTS)}")
    query = select(Lead).where(Lead.merged_into.is_(None))
    if not f.include_erased:
        query = query.where(Lead.erased_at.is_(None))
    if f.owner is not None:
        query = query.where(Lead.owner_id.is_(None) if f.owner.pool else Lead.owner_id == f.owner.person_id)
    if f.stage:
        query = query.where(Lead.stage == f.stage)
    if f.tier:
        query = query.where(Lead.tier == f.tier)
    if f.channel:
        query = query.where(Lead.channel == f.channel)
    if f.min_fit is not None:
        query = query.where(Lead.fit_score >= f.min_fit)
    if f.red_flag:
        query = query.where(
            select(LeadRedFlag.id).where(LeadRedFlag.lead_id == Lead.id, LeadRedFlag.name == f.red_flag).exists()
        )
    if f.q:
        like = f"%{f.q.lower()}%"
        query = query.where(
            or_(
                func.lower(Lead.name).like(like), func.lower(Lead.email).like(like), func.lower(Lead.company).like(like)
            )
        )
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(query.order_by(_SORTS[sort], Lead.id).limit(limit).offset(offset))
    return list(rows), total or 0

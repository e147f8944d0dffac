"""Leads' use cases: one async function per thing that can happen."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select

from services.leads import domain
from services.leads.schemas import DealIn, LeadCreated, LeadIn
from services.leads.settings import Settings
from services.leads.store import Deal, Lead, StageChange, Touch
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.uow import UnitOfWork


def _intake(data: LeadIn) -> domain.Intake:
    return domain.Intake(
        industry=data.industry,
        employees=data.employees,
        annual_revenue=data.annual_revenue,
        country=data.country,
        job_title=data.job_title,
        needs=tuple(data.needs),
        budget=data.budget,
        brief=data.brief,
        timeline=data.timeline,
    )


def _segment(data: LeadIn, fit: int) -> str:
    return "ideal" if fit >= 60 else "default"


async def capture_lead(tx: UnitOfWork, data: LeadIn) -> LeadCreated:
    """Record a new lead (``lead.captured``), or a new touch on the person we already know."""
    existing = await tx.session.scalar(select(Lead).where(Lead.email == data.email))
    now = tx.now()
    if existing is not None:
        tx.session.add(Touch(lead_id=existing.id, channel=data.channel, campaign=data.campaign, at=now))
        return LeadCreated(
            lead_id=existing.id,
            fit_score=existing.fit_score,
            red_flags=existing.red_flag_names,
            stage=existing.stage,
            duplicate=True,
        )
    intake = _intake(data)
    fit = domain.fit_score(intake)
    flags = domain.intake_red_flags(intake)
    domain_name = domain.email_domain(data.email)
    lead = Lead(
        id=uuid.uuid4(),
        email=data.email,
        name=data.name,
        company=data.company,
        company_domain=None if domain_name in domain.FREE_MAIL else domain_name,
        job_title=data.job_title,
        industry=data.industry,
        employees=data.employees,
        annual_revenue=data.annual_revenue,
        country=data.country,
        language=data.language,
        timezone=data.timezone,
        channel=data.channel,
        campaign=data.campaign,
        utm=data.utm,
        budget=data.budget,
        currency=data.currency,
        brief=data.brief,
        timeline=data.timeline,
        needs=data.needs,
        consent_marketing=data.consent_marketing,
        legal_basis=data.legal_basis,
        referred_by=data.referred_by,
        stage="awareness",
        fit_score=fit.score,
        fit_matched=fit.matched,
        fit_missed=fit.missed,
        red_flags=[{"name": f.name, "evidence": f.evidence, "at": now.isoformat()} for f in flags],
        created_at=now,
        updated_at=now,
    )
    tx.session.add(lead)
    tx.session.add(Touch(lead_id=lead.id, channel=data.channel, campaign=data.campaign, at=now))
    tx.session.add(StageChange(lead_id=lead.id, from_stage=None, to_stage="awareness", cause="lead.captured", at=now))
    tx.emit(
        "lead.captured",
        ev.LeadCaptured(
            name=data.name,
            email=data.email,
            company=data.company,
            job_title=data.job_title,
            industry=data.industry,
            employees=data.employees,
            annual_revenue=data.annual_revenue,
            country=data.country,
            language=data.language,
            timezone=data.timezone,
            channel=data.channel,
            campaign=data.campaign,
            utm=data.utm,
            budget=data.budget,
            currency=data.currency,
            has_brief=bool(data.brief),
            timeline=data.timeline,
            needs=data.needs,
            consent_marketing=data.consent_marketing,
            legal_basis=data.legal_basis,
            referred_by=data.referred_by,
            stage="awareness",
            fit_score=fit.score,
            red_flags=[f.name for f in flags],
            segment=_segment(data, fit.score),
        ),
        lead_id=lead.id,
    )
    return LeadCreated(lead_id=lead.id, fit_score=fit.score, red_flags=[f.name for f in flags], stage="awareness")


async def get_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead:
    lead = await tx.session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    return lead


async def stage_history(tx: UnitOfWork, lead_id: uuid.UUID) -> list[StageChange]:
    rows = await tx.session.scalars(
        select(StageChange).where(StageChange.lead_id == lead_id).order_by(StageChange.id)
    )
    return list(rows)


async def move_stage(tx: UnitOfWork, lead: Lead, to_stage: str, cause: str) -> None:
    """Move the lead and say so (``lead.stage_changed``), with the cause in the history."""
    now = tx.now()
    previous = lead.stage
    lead.stage = to_stage
    lead.updated_at = now
    tx.session.add(StageChange(lead_id=lead.id, from_stage=previous, to_stage=to_stage, cause=cause, at=now))
    tx.emit(
        "lead.stage_changed",
        ev.LeadStageChanged(from_stage=previous, to_stage=to_stage, cause=cause),  # type: ignore[arg-type]
        lead_id=lead.id,
    )


async def apply_stage_event(tx: UnitOfWork, lead_id: uuid.UUID | None, cause: str) -> None:
    """An event from another service that may move a lead in the funnel."""
    if lead_id is None:
        return
    lead = await tx.session.get(Lead, lead_id)
    if lead is None or lead.erased_at is not None:
        return  # a person we never captured (or erased): nothing to move
    target = domain.next_stage(lead.stage, cause)
    if target is not None:
        await move_stage(tx, lead, target, cause)


async def propose_deal(tx: UnitOfWork, lead_id: uuid.UUID, data: DealIn) -> Deal:
    """Write an estimate for a lead (``deal.proposed``)."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        raise Invalid(f"lead {lead_id} was erased; a deal needs a person")
    lines = [line.model_dump(mode="json") for line in data.lines]
    deal = Deal(
        id=uuid.uuid4(),
        lead_id=lead.id,
        title=data.title,
        kind=data.kind,
        currency=data.currency,
        lines=lines,
        total=data.total,
        monthly_fee=data.monthly_fee,
        included_hours=data.included_hours,
        hourly_rate=data.hourly_rate,
        status="proposed",
        created_at=tx.now(),
    )
    tx.session.add(deal)
    tx.emit("deal.proposed", ev.DealProposed(**_deal_fields(deal)), lead_id=lead.id)
    target = domain.next_stage(lead.stage, "deal.proposed")
    if target:
        await move_stage(tx, lead, target, "deal.proposed")
    return deal


def _deal_fields(deal: Deal) -> dict:
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
    }


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> Deal:
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id}")
    return deal


async def win_deal(
    tx: UnitOfWork, settings: Settings, deal_id: uuid.UUID, *, signed_by: str, signed_at: datetime | None
) -> Deal:
    """A signed estimate becomes a won deal (``deal.won``) with the deposit share its risk asks."""
    deal = await get_deal(tx, deal_id)
    if deal.status == "won":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be won")
    if not signed_by.strip():
        raise Invalid("signed_by is required: no signature, no deal")
    lead = await get_lead(tx, deal.lead_id)
    share = domain.deposit_share(
        lead.red_flag_names,
        lead.fit_score,
        base=settings.deposit_base_share,
        per_flag=settings.deposit_share_per_red_flag,
        maximum=settings.deposit_max_share,
        low_fit_extra=settings.deposit_low_fit_extra,
        low_fit_threshold=settings.low_fit_threshold,
        tier=lead.tier,
    )
    deal.status = "won"
    deal.signed_by = signed_by
    deal.signed_at = signed_at or tx.now()
    deal.deposit_share = share
    tx.emit(
        "deal.won",
        ev.DealWon(
            **_deal_fields(deal),
            signed_by=signed_by,
            signed_at=deal.signed_at,
            deposit_share=share,
            red_flags=lead.red_flag_names,
            fit_score=lead.fit_score,
            channel=lead.channel,
            tier=lead.tier,  # type: ignore[arg-type]
        ),
        lead_id=lead.id,
    )
    return deal


async def lose_deal(tx: UnitOfWork, deal_id: uuid.UUID, reason: str) -> Deal:
    deal = await get_deal(tx, deal_id)
    if deal.status == "lost":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be lost")
    deal.status = "lost"
    deal.lost_reason = reason
    tx.emit("deal.lost", ev.DealLost(deal_id=deal.id, reason=reason), lead_id=deal.lead_id)
    return deal


async def funnel(tx: UnitOfWork) -> dict[str, int]:
    rows = await tx.session.execute(select(Lead.stage, func.count()).group_by(Lead.stage))
    counts = dict.fromkeys(ev.FUNNEL_STAGES, 0)
    counts.update({stage: n for stage, n in rows.all()})
    return counts

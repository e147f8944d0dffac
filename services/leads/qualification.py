"""Qualification: the ideal client profile leads are scored against, red flags, and BANT."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select

from services.leads import domain
from services.leads.commands import QualificationIn
from services.leads.context import Context
from services.leads.funnel import follow
from services.leads.record import CurrentIcp, live_lead, read_icp, remember_icp, remembered_icp
from services.leads.store import IcpVersion, Lead, LeadRedFlag
from services.leads.timeline import log_activity
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.uow import UnitOfWork


def intake_of(lead: Lead) -> domain.Intake:
    """What the rules read of a stored lead."""
    return domain.Intake(
        industry=lead.industry,
        employees=lead.employees,
        annual_revenue=lead.annual_revenue,
        country=lead.country,
        job_title=lead.job_title,
        needs=tuple(lead.needs or ()),
        budget=lead.budget,
        brief=lead.brief,
        timeline=lead.timeline,
    )


# --------------------------------------------------------------------------- ICP


async def current_icp(tx: UnitOfWork, ctx: Context) -> CurrentIcp:
    """The ICP in force (the newest version); a fresh database starts from the YAML file. Read
    once per transaction (``replace_icp`` keeps the memo current)."""
    icp = remembered_icp(tx)
    if icp is None and (recent := ctx.icp.get()) is not None:
        icp = recent
        remember_icp(tx, icp)
    if icp is None:
        icp = await read_icp(tx)
        if icp is not None:
            ctx.icp.keep(icp)
    if icp is None:
        text = ctx.settings.icp_file.read_text(encoding="utf-8")
        domain.IdealClientProfile.from_yaml(text)  # a broken file fails loudly, not silently
        row = IcpVersion(document=text, created_at=tx.now())
        tx.session.add(row)
        await tx.session.flush()
        icp = CurrentIcp(domain.parsed_icp(text), text, row.id)
        remember_icp(tx, icp)
    return icp


async def replace_icp(tx: UnitOfWork, ctx: Context, document: str) -> tuple[int, int]:
    """Set a new ICP (kept as a new version) and rescore every live lead against it.
    Returns the version and how many leads were rescored."""
    try:
        icp = domain.IdealClientProfile.from_yaml(document)
    except ValueError as exc:
        raise Invalid(f"ICP refused: {exc}") from exc
    await current_icp(tx, ctx)  # the seed version stays in the history
    row = IcpVersion(document=document, created_at=tx.now())
    tx.session.add(row)
    await tx.session.flush()
    remember_icp(tx, CurrentIcp(icp, document, row.id))
    # Other transactions read the new version once this one committed (dropped now, too, so
    # none keeps the old one meanwhile for longer than it takes to read it).
    ctx.icp.forget()
    tx.after_commit(ctx.icp.forget)
    leads = await tx.session.scalars(select(Lead).where(Lead.erased_at.is_(None), Lead.merged_into.is_(None)))
    rescored = 0
    for lead in leads:
        fit = domain.fit_score(intake_of(lead), icp)
        if (fit.score, fit.matched) != (lead.fit_score, lead.fit_matched):
            lead.fit_score, lead.fit_matched, lead.fit_missed = fit.score, fit.matched, fit.missed
            lead.updated_at = tx.now()
        rescored += 1
    return row.id, rescored


# --------------------------------------------------------------------------- red flags


async def raise_red_flag(tx: UnitOfWork, lead: Lead, *, name: str, evidence: str, source: str) -> bool:
    """Raise a red flag with its evidence; False when it was already raised."""
    try:
        flags = domain.add_flag(list(lead.red_flags or []), name, evidence, source=source, at=tx.now())
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    if flags is None:
        return False
    lead.red_flags = flags
    lead.updated_at = tx.now()
    tx.session.add(LeadRedFlag(lead_id=lead.id, name=name, raised_at=tx.now()))
    log_activity(tx, lead.id, "red_flag.raised", name=name, evidence=evidence, source=source)
    return True


async def note_red_flag(tx: UnitOfWork, lead_id: uuid.UUID, *, name: str, evidence: str) -> Lead:
    """Sales notes a signal seen during the sale (refused a deposit, boss reversed direction...)."""
    lead = await live_lead(tx, lead_id)
    await raise_red_flag(tx, lead, name=name, evidence=evidence, source="sales")
    return lead


async def clear_red_flag(tx: UnitOfWork, lead_id: uuid.UUID, *, name: str, reason: str | None) -> Lead:
    """Sales clears a red flag (a mistaken note, or the client changed), with why."""
    lead = await live_lead(tx, lead_id)
    if name not in lead.red_flag_names:
        raise NotFound(f"lead {lead_id} has no red flag {name!r}")
    lead.red_flags = [f for f in lead.red_flags if f["name"] != name]
    lead.updated_at = tx.now()
    await tx.session.execute(delete(LeadRedFlag).where(LeadRedFlag.lead_id == lead.id, LeadRedFlag.name == name))
    log_activity(tx, lead.id, "red_flag.cleared", name=name, reason=reason)
    return lead


# --------------------------------------------------------------------------- BANT


async def qualify_lead(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, data: QualificationIn
) -> tuple[Lead, domain.Qualification]:
    """BANT: answers not given are read from the intake; publishes ``lead.qualified`` or
    ``lead.disqualified`` with its reasons, and moves the stage."""
    lead = await live_lead(tx, lead_id)
    policy = ctx.settings.qualification
    bant = domain.answered(
        policy.suggest(intake_of(lead)),
        budget=data.budget,
        authority=data.authority,
        need=data.need,
        timeline=data.timeline,
    )
    result = policy.decide(bant, extra_reasons=data.reasons)
    now = tx.now()
    lead.qualification = {
        "budget": bant.budget,
        "authority": bant.authority,
        "need": bant.need,
        "timeline": bant.timeline,
        "qualified": result.qualified,
        "reasons": result.reasons,
        "notes": data.notes,
        "at": now.isoformat(),
    }
    lead.qualified_at = now
    lead.updated_at = now
    if result.qualified:
        qualified = ev.LeadQualified(
            budget=bant.budget,
            authority=bant.authority,
            need=bant.need,
            timeline=bant.timeline,
            notes=data.notes,
            owner_id=lead.owner_id,
        )
        tx.emit("lead.qualified", qualified, lead_id=lead.id)
        log_activity(tx, lead.id, "lead.qualified", missing=result.missing or None, notes=data.notes)
        await follow(tx, lead, "lead.qualified")
    else:
        tx.emit(
            "lead.disqualified", ev.LeadDisqualified(reasons=result.reasons, owner_id=lead.owner_id), lead_id=lead.id
        )
        log_activity(tx, lead.id, "lead.disqualified", reasons=result.reasons, notes=data.notes)
        await follow(tx, lead, "lead.disqualified")
    return lead, result

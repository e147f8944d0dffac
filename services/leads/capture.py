"""Capture: a new lead (from a form, a CSV import or a referral), or a new touch on a person we
already know (dedupe)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from services.leads import accounts, domain, returning, sales
from services.leads.commands import LeadIn
from services.leads.context import Context
from services.leads.funnel import follow, move_stage
from services.leads.qualification import current_icp
from services.leads.record import (
    capture_candidates,
    company_leads,
    lead_for_event,
    remember_captured,
)
from services.leads.store import Account, Lead, LeadRedFlag, StageChange, Touch
from services.leads.timeline import log_activity
from shared import events as ev
from shared.consumer import RejectEvent
from shared.errors import Invalid
from shared.ids import time_ordered_id
from shared.pauses import Pauses
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class Captured:
    """The outcome of a capture: the new lead, or the known one a duplicate touched."""

    lead_id: uuid.UUID
    fit_score: int
    red_flags: list[str]
    stage: str
    duplicate: bool = False
    matched_by: domain.MatchedBy | None = None


async def find_duplicate(tx: UnitOfWork, data: LeadIn) -> tuple[Lead, domain.MatchedBy] | None:
    """The known lead this capture is about, and what matched it (see ``domain.dedupe``)."""
    company = domain.company_domain(data.email)
    found, colleagues = await capture_candidates(tx, domain.normalise_email(data.email), data.email, company)
    matched_by: domain.MatchedBy = "email"
    if found is None:
        if company is None:
            return None
        found = domain.same_person(
            data.name, colleagues if colleagues is not None else await company_leads(tx, company)
        )
        matched_by = "company_domain"
    if found is None:
        return None
    kept = await lead_for_event(tx, found.id)
    if kept is None:
        return None  # an erased person who writes again is a new lead: we kept nothing of them
    return kept, matched_by


async def capture_lead(
    tx: UnitOfWork,
    ctx: Context,
    data: LeadIn,
    *,
    icp: domain.IdealClientProfile | None = None,
    source: str = "api",
    referral_cause: str = "lead.referred",
) -> Captured:
    """Record a new lead (``lead.captured``), or a new touch on the person or company we already
    know (``lead.captured`` with ``duplicate``; the answer names the existing lead)."""
    now = tx.now()
    if data.referred_by is not None and await lead_for_event(tx, data.referred_by) is None:
        raise Invalid(f"referred_by: no lead {data.referred_by} to credit the referral to")
    duplicate = await find_duplicate(tx, data)
    if duplicate is not None:
        return await _touch_again(tx, ctx, duplicate[0], data, matched_by=duplicate[1], source=source)
    if icp is None:
        icp = (await current_icp(tx, ctx)).profile
    intake = data.intake()
    fit = domain.fit_score(intake, icp)
    flags = domain.intake_red_flags(intake)
    flags, surcharge = await returning.flag_returning(tx, ctx, data, flags)
    # A second person of the same company joins its account (a new person, never merged).
    account = await accounts.account_for(tx, email=data.email, company=data.company)
    lead = Lead(
        id=time_ordered_id(),
        email=data.email,
        email_key=domain.normalise_email(data.email),
        name=data.name,
        company=data.company,
        company_domain=domain.company_domain(data.email),
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
        engagement_score=0,
        red_flags=[{"name": f.name, "evidence": f.evidence, "source": "intake", "at": now.isoformat()} for f in flags],
        referrals=0,
        surcharge=surcharge,
        account_id=account.id if account is not None else None,
        created_at=now,
        updated_at=now,
    )
    tx.session.add(lead)
    remember_captured(tx, lead)
    tx.session.add(Touch(lead_id=lead.id, channel=data.channel, campaign=data.campaign, utm=data.utm or None, at=now))
    tx.session.add(StageChange(lead_id=lead.id, from_stage=None, to_stage="awareness", cause="lead.captured", at=now))
    for flag in flags:
        tx.session.add(LeadRedFlag(lead_id=lead.id, name=flag.name, raised_at=now))
    # Its owner comes with it (the rules, language and round-robin), and its first-touch clock.
    assignment = await sales.assign_new(tx, ctx, lead)
    log_activity(
        tx,
        lead.id,
        "lead.captured",
        channel=data.channel,
        campaign=data.campaign,
        source=source,
        fit_score=fit.score,
        red_flags=[f.name for f in flags] or None,
        owner_id=assignment.owner_id,
        assigned=assignment.reason,
    )
    tx.emit(
        "lead.captured",
        _captured(lead, fit.score, duplicate=False, account=account, wording=data.consent_wording, source=source),
        lead_id=lead.id,
    )
    if data.referred_by is not None:
        await _credit_referrer(tx, referrer_id=data.referred_by, referred_id=lead.id, cause=referral_cause)
    return Captured(lead_id=lead.id, fit_score=fit.score, red_flags=[f.name for f in flags], stage="awareness")


def _captured(
    lead: Lead,
    fit: int,
    *,
    duplicate: bool,
    channel: str | None = None,
    campaign: str | None = None,
    consent: bool | None = None,
    account: Account | None = None,
    wording: str | None = None,
    source: str | None = None,
) -> ev.LeadCaptured:
    return ev.LeadCaptured(
        name=lead.name or "",
        email=lead.email,
        company=lead.company,
        job_title=lead.job_title,
        industry=lead.industry,
        employees=lead.employees,
        annual_revenue=lead.annual_revenue,
        country=lead.country,
        language=lead.language,
        timezone=lead.timezone,
        channel=channel or lead.channel,
        campaign=campaign if channel else lead.campaign,
        utm=lead.utm or {},
        budget=lead.budget,
        currency=lead.currency,
        has_brief=bool(lead.brief),
        timeline=lead.timeline,
        needs=lead.needs or [],
        consent_marketing=lead.consent_marketing if consent is None else consent,
        legal_basis=lead.legal_basis,
        referred_by=lead.referred_by,
        stage=lead.stage,
        fit_score=fit,
        red_flags=lead.red_flag_names,
        segment=domain.segment(fit),
        duplicate=duplicate,
        owner_id=lead.owner_id,
        first_touch_due_at=lead.first_touch_due_at if not duplicate else None,
        account_id=account.id if account is not None else None,
        account_name=account.name if account is not None else None,
        consent_wording=wording,
        capture_source=CONSENT_SOURCES.get(source or "", source),
    )


# How a capture came in, as nurture's consent history names its source.
CONSENT_SOURCES = {"api": "form", "import": "import", "referral.made": "referral"}

# What a person's new touch may fill on their lead when still empty (never overwriting).
FILLABLE = ("name", "company", "job_title", "industry", "employees", "country", "timeline", "brief")


def fill_empty(lead: Lead, data: LeadIn) -> list[str]:
    """The same person submitted the form again: fill what their lead still lacks from it, never
    overwriting what it holds. Amounts come only with their currency (or the lead's own).
    Returns the names of the fields filled."""
    filled: list[str] = []
    for name in FILLABLE:
        given = getattr(data, name)
        if given not in (None, "") and getattr(lead, name) in (None, ""):
            setattr(lead, name, given)
            filled.append(name)
    if not lead.needs and data.needs:
        lead.needs = list(data.needs)
        filled.append("needs")
    for name in ("budget", "annual_revenue"):
        given = getattr(data, name)
        if given is None or getattr(lead, name) is not None:
            continue
        if lead.currency is None and data.currency is not None:
            lead.currency = data.currency
            filled.append("currency")
        if lead.currency is not None and lead.currency == data.currency:
            setattr(lead, name, given)
            filled.append(name)
    return filled


async def _touch_again(
    tx: UnitOfWork, ctx: Context, lead: Lead, data: LeadIn, *, matched_by: domain.MatchedBy, source: str
) -> Captured:
    """A known person (or a colleague from the same company) reached us again: keep the touch."""
    now = tx.now()
    same_person = matched_by == "email"
    tx.session.add(
        Touch(
            lead_id=lead.id,
            channel=data.channel,
            campaign=data.campaign,
            utm=data.utm or None,
            matched_by=matched_by,
            contact_name=None if same_person else data.name,
            contact_email=None if same_person else data.email,
            at=now,
        )
    )
    # The person's own new consent counts (nurture merges it); a colleague's says nothing of theirs.
    consent = data.consent_marketing if same_person else None
    if same_person and data.consent_marketing and not lead.consent_marketing:
        lead.consent_marketing = True
        lead.legal_basis = data.legal_basis or lead.legal_basis
    filled = fill_empty(lead, data) if same_person else []
    account = await accounts.link(tx, lead)
    lead.updated_at = now
    log_activity(
        tx,
        lead.id,
        "lead.touched",
        channel=data.channel,
        campaign=data.campaign,
        matched_by=matched_by,
        source=source,
        filled=filled or None,
    )
    await follow(tx, lead, "lead.returned")
    tx.emit(
        "lead.captured",
        _captured(
            lead,
            lead.fit_score,
            duplicate=True,
            channel=data.channel,
            campaign=data.campaign,
            consent=consent,
            account=account,
            wording=data.consent_wording if same_person else None,
            source=source,
        ),
        lead_id=lead.id,
    )
    # Counted here, not from the event: lead.captured does not say what matched.
    tx.after_commit(lambda: ctx.metrics.duplicates.labels(matched_by).inc())
    return Captured(
        lead_id=lead.id,
        fit_score=lead.fit_score,
        red_flags=lead.red_flag_names,
        stage=lead.stage,
        duplicate=True,
        matched_by=matched_by,
    )


async def _credit_referrer(tx: UnitOfWork, *, referrer_id: uuid.UUID, referred_id: uuid.UUID, cause: str) -> None:
    referrer = await lead_for_event(tx, referrer_id)
    if referrer is None:
        return
    referrer.referrals = (referrer.referrals or 0) + 1
    log_activity(tx, referrer.id, "referral.credited", referred_lead_id=referred_id)
    target = domain.next_stage(referrer.stage, "referral.made")
    if target:
        await move_stage(tx, referrer, to_stage=target, cause=cause)


async def referral_made(tx: UnitOfWork, ctx: Context, event: ev.Envelope, data: ev.ReferralMade) -> None:
    """A client referred someone: a new lead on channel ``referral``, credited to the referrer
    (who moves to ``advocacy`` when a client). A person we already know gets a touch instead.
    A referral whose key is gone (the referred person was erased) brings nobody."""
    if event.shredded:
        return
    referrer = await lead_for_event(tx, event.lead_id)
    try:
        body = LeadIn.from_referral(data, referred_by=referrer.id if referrer is not None else None)
    except ValueError as exc:
        raise RejectEvent(f"referral {data.referral_id} cannot become a lead: {exc}") from exc
    created = await capture_lead(tx, ctx, body, source="referral.made", referral_cause="referral.made")
    if tx.keyring is not None:
        # The referral's key holds this person's data: it is theirs now (erased with them).
        # Without the autoflush before it: the UPDATE reads person_keys only, and nothing pending
        # in a batch holds a referral's key (erasures mark leads' keys; new keys are made at the
        # commit). The flush it forced was one per referral, each writing its event's rows alone.
        with tx.session.no_autoflush:
            await tx.keyring.reassign(tx, from_subject=data.referral_id, to_subject=created.lead_id)
    if not created.duplicate:
        log_activity(
            tx,
            created.lead_id,
            "referral.made",
            referral_id=data.referral_id,
            referred_by=event.lead_id,
            note=data.note,
        )


# --------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What an import did: rows accepted, duplicates (touches), rejected with their errors."""

    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    lead_ids: list[uuid.UUID] = field(default_factory=list)

    def add(self, part: ImportReport) -> None:
        """Count a part of the file (imported in its own transaction) into the whole."""
        self.accepted += part.accepted
        self.duplicates += part.duplicates
        self.rejected += part.rejected
        self.errors += part.errors
        self.lead_ids += part.lead_ids


async def import_rows(tx: UnitOfWork, ctx: Context, rows: list[tuple[int, LeadIn | list[str]]]) -> ImportReport:
    """Capture every valid row; each invalid one is reported with why (the good rows go in).
    ``rows`` holds (row number, validated lead or the row's errors)."""
    icp = (await current_icp(tx, ctx)).profile
    report = ImportReport(rows=len(rows))
    await accounts.prefetch(tx, [(item.email, item.company) for _, item in rows if not isinstance(item, list)])
    pause = Pauses()  # a file of thousands of rows must not hold the loop (health checks, batches)
    for number, item in rows:
        await pause()
        if isinstance(item, list):
            report.rejected += 1
            report.errors.append({"row": number, "errors": item})
            continue
        try:
            created = await capture_lead(tx, ctx, item, icp=icp, source="import")
        except Invalid as exc:
            report.rejected += 1
            report.errors.append({"row": number, "errors": [exc.message]})
            continue
        report.lead_ids.append(created.lead_id)
        if created.duplicate:
            report.duplicates += 1
        else:
            report.accepted += 1
    counts = {"accepted": report.accepted, "duplicate": report.duplicates, "rejected": report.rejected}

    def count() -> None:
        for outcome, n in counts.items():
            if n:
                ctx.metrics.import_rows.labels(outcome).inc(n)

    tx.after_commit(count)  # rows, not events: a rejected row emits nothing
    return report

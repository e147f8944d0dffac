"""Leads' use cases: one async function per thing that can happen.

Each takes the unit of work (one transaction: state, outbox and inbox commit together), checks
everything it can before writing anything, and records the events it causes in the outbox."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, or_, select, update

from services.leads import domain
from services.leads.metrics import LeadsMetrics
from services.leads.schemas import (
    ChangeRequestIn,
    DealIn,
    LeadCreated,
    LeadIn,
    QualificationIn,
    SpendIn,
)
from services.leads.settings import Settings
from services.leads.store import (
    Activity,
    ChangeRequest,
    ChannelSpend,
    Deal,
    IcpVersion,
    Lead,
    LeadRedFlag,
    Merge,
    StageChange,
    Touch,
)
from shared import events as ev
from shared.consumer import RejectEvent
from shared.errors import Conflict, Invalid, NotFound
from shared.pauses import Pauses
from shared.privacy import forget_person
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
ERASED = "[erased]"
# How many merges an event's lead is followed through (a merged lead's keeper may be merged too).
MERGE_HOPS = 5
# Same-company candidates a capture compares names with: the company's first leads.
COMPANY_CANDIDATES = 50
# Per-transaction memo (tx.memo) keys: see prefetch.
_LEADS = "leads.by_id"
_ICP = "leads.icp"
_KNOWN = "leads.known"
# Timeline detail an erasure drops: free text, and names (who signed, a title, a campaign).
ERASED_DETAIL = frozenset({"notes", "evidence", "note", "comment", "reason", "signed_by", "title", "campaign", "description"})


@dataclass
class Context:
    """What use cases need besides the transaction: settings and this service's metrics."""

    settings: Settings
    metrics: LeadsMetrics


# --------------------------------------------------------------------------- helpers


def _log(tx: UnitOfWork, lead_id: uuid.UUID, kind: str, **detail: Any) -> None:
    """One entry of the lead's timeline."""
    clean = {k: (str(v) if isinstance(v, uuid.UUID | Decimal | date) else v) for k, v in detail.items() if v is not None}
    tx.session.add(Activity(lead_id=lead_id, type=kind, at=tx.now(), detail=clean))


def _intake_of(lead: Lead) -> domain.Intake:
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


def _segment(fit: int) -> str:
    return "ideal" if fit >= 60 else "default"


def engagement_now(ctx: Context, lead: Lead, now: datetime) -> int:
    return domain.engagement_score(
        lead.engagement_points or Decimal(0),
        since=lead.engagement_at,
        now=now,
        half_life_days=ctx.settings.engagement_half_life_days,
    )


async def _load_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead | None:
    """``session.get``, minus its query (and the flush before it) for a lead the batch's prefetch
    read or found missing, or one captured in this transaction (pending until the commit)."""
    known: dict[uuid.UUID, Lead | None] = tx.memo.get(_LEADS, {})
    if lead_id in known:
        return known[lead_id]
    return await tx.session.get(Lead, lead_id)


async def get_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead:
    lead = await _load_lead(tx, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    return lead


async def _live_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead:
    """A lead that can still be worked on: not erased, and the kept one when it was merged."""
    lead = await get_lead(tx, lead_id)
    if lead.merged_into is not None:
        lead = await get_lead(tx, lead.merged_into)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased; its personal data is gone")
    return lead


async def _lead_for_event(tx: UnitOfWork, lead_id: uuid.UUID | None) -> Lead | None:
    """The lead an event from another service is about (following merges), or None when we
    never captured that person or they were erased: nothing to do then."""
    if lead_id is None:
        return None
    lead = await _load_lead(tx, lead_id)
    for _ in range(MERGE_HOPS):
        if lead is None or lead.merged_into is None:
            break
        lead = await _load_lead(tx, lead.merged_into)
    if lead is None or lead.erased_at is not None:
        return None
    return lead


def _after(tx: UnitOfWork, ctx: Context, count: Any) -> None:
    """Count only once the transaction committed; then refresh the stage gauges."""
    tx.after_commit(count)
    tx.after_commit(ctx.metrics.refresh_soon)


# --------------------------------------------------------------------------- ICP


async def current_icp(tx: UnitOfWork, ctx: Context) -> tuple[domain.IdealClientProfile, str, int]:
    """The ICP in force (the newest version); a fresh database starts from the YAML file. Read
    once per transaction (``replace_icp`` keeps the memo current)."""
    if _ICP not in tx.memo and not await _read_icp(tx):
        text = ctx.settings.icp_file.read_text(encoding="utf-8")
        domain.IdealClientProfile.from_yaml(text)  # a broken file fails loudly, not silently
        row = IcpVersion(document=text, created_at=tx.now())
        tx.session.add(row)
        await tx.session.flush()
        tx.memo[_ICP] = (domain.parsed_icp(text), text, row.id)
    return tx.memo[_ICP]


async def _read_icp(tx: UnitOfWork) -> bool:
    """Keep the newest stored ICP in the memo; False when none was ever stored."""
    row = await tx.session.scalar(select(IcpVersion).order_by(IcpVersion.id.desc()).limit(1))
    if row is not None:
        tx.memo[_ICP] = (domain.parsed_icp(row.document), row.document, row.id)
    return row is not None


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
    tx.memo[_ICP] = (icp, document, row.id)
    leads = await tx.session.scalars(select(Lead).where(Lead.erased_at.is_(None), Lead.merged_into.is_(None)))
    rescored = 0
    for lead in leads:
        fit = domain.fit_score(_intake_of(lead), icp)
        if (fit.score, fit.matched) != (lead.fit_score, lead.fit_matched):
            lead.fit_score, lead.fit_matched, lead.fit_missed = fit.score, fit.matched, fit.missed
            lead.updated_at = tx.now()
        rescored += 1
    return row.id, rescored


# --------------------------------------------------------------------------- capture


@dataclass
class _KnownLeads:
    """What a batch's captures dedupe against, read by ``prefetch`` in a few queries and kept
    current by ``capture_lead``: the lead with each dedupe key and each email (None: none), and
    per company domain its first live leads in ``_find_duplicate``'s order. Only the values
    present are answered from here; any other is queried. Erasing or merging a lead drops it."""

    by_key: dict[str, Lead | None]
    by_email: dict[str, Lead | None]
    by_company: dict[str, list[Lead]]

    def captured(self, lead: Lead) -> None:
        if lead.email_key in self.by_key:
            self.by_key[lead.email_key] = lead
        if lead.email in self.by_email:
            self.by_email[lead.email] = lead
        if lead.company_domain in self.by_company:
            same = self.by_company[lead.company_domain]
            same.append(lead)
            same.sort(key=_capture_order)
            del same[COMPANY_CANDIDATES:]


def _capture_order(lead: Lead) -> tuple[datetime, uuid.UUID]:
    return lead.created_at, lead.id


async def _lead_where(
    tx: UnitOfWork, column: Any, value: str, known: dict[str, Lead | None] | None
) -> Lead | None:
    """The lead whose (unique) ``column`` is ``value``: from ``known`` when it covers the value."""
    if known is not None and value in known:
        return known[value]
    return await tx.session.scalar(select(Lead).where(column == value))


async def _find_duplicate(tx: UnitOfWork, data: LeadIn) -> tuple[Lead, str] | None:
    """The known lead this capture is about: same normalised email, else the same person (name)
    at the same company domain."""
    known: _KnownLeads | None = tx.memo.get(_KNOWN)
    key = domain.normalise_email(data.email)
    found = await _lead_where(tx, Lead.email_key, key, known.by_key if known else None)
    if found is None:
        found = await _lead_where(tx, Lead.email, data.email, known.by_email if known else None)
    matched_by = "email"
    if found is None:
        company = domain.company_domain(data.email)
        if company is None:
            return None
        # Same company and same name: the person wrote from another address of their company.
        # A colleague (another name) is a new lead of the same company, as a CRM keeps contacts.
        if known is not None and company in known.by_company:
            candidates: Any = known.by_company[company]
        else:
            candidates = await tx.session.scalars(
                select(Lead)
                .where(Lead.company_domain == company, Lead.merged_into.is_(None), Lead.erased_at.is_(None))
                .order_by(Lead.created_at, Lead.id)
                .limit(COMPANY_CANDIDATES)
            )
        name = domain.normalise_name(data.name)
        found = next((c for c in candidates if c.name and domain.normalise_name(c.name) == name), None)
        matched_by = "company_domain"
    if found is None:
        return None
    kept = await _lead_for_event(tx, found.id)
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
) -> LeadCreated:
    """Record a new lead (``lead.captured``), or a new touch on the person or company we already
    know (``lead.captured`` with ``duplicate``; the answer names the existing lead)."""
    now = tx.now()
    if data.referred_by is not None:
        referrer = await _lead_for_event(tx, data.referred_by)
        if referrer is None:
            raise Invalid(f"referred_by: no lead {data.referred_by} to credit the referral to")
    duplicate = await _find_duplicate(tx, data)
    if duplicate is not None:
        return await _touch_again(tx, ctx, duplicate[0], data, matched_by=duplicate[1], source=source)
    if icp is None:
        icp, _, _ = await current_icp(tx, ctx)
    intake = _intake(data)
    fit = domain.fit_score(intake, icp)
    flags = domain.intake_red_flags(intake)
    lead = Lead(
        id=uuid.uuid4(),
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
        created_at=now,
        updated_at=now,
    )
    tx.session.add(lead)
    _remember_captured(tx, lead)
    tx.session.add(Touch(lead_id=lead.id, channel=data.channel, campaign=data.campaign, utm=data.utm or None, at=now))
    tx.session.add(StageChange(lead_id=lead.id, from_stage=None, to_stage="awareness", cause="lead.captured", at=now))
    for flag in flags:
        tx.session.add(LeadRedFlag(lead_id=lead.id, name=flag.name, raised_at=now))
    _log(tx, lead.id, "lead.captured", channel=data.channel, campaign=data.campaign, source=source, fit_score=fit.score,
         red_flags=[f.name for f in flags] or None)
    tx.emit("lead.captured", _captured(lead, fit.score, duplicate=False), lead_id=lead.id)
    if data.referred_by is not None:
        await _credit_referrer(tx, data.referred_by, lead.id, cause=referral_cause)
    _after(tx, ctx, lambda: ctx.metrics.captured.labels(data.channel).inc())
    return LeadCreated(lead_id=lead.id, fit_score=fit.score, red_flags=[f.name for f in flags], stage="awareness")


def _captured(lead: Lead, fit: int, *, duplicate: bool, channel: str | None = None, campaign: str | None = None,
              consent: bool | None = None) -> ev.LeadCaptured:
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
        stage=lead.stage,  # type: ignore[arg-type]
        fit_score=fit,
        red_flags=lead.red_flag_names,
        segment=_segment(fit),
        duplicate=duplicate,
    )


async def _touch_again(tx: UnitOfWork, ctx: Context, lead: Lead, data: LeadIn, *, matched_by: str, source: str) -> LeadCreated:
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
    lead.updated_at = now
    _log(tx, lead.id, "lead.touched", channel=data.channel, campaign=data.campaign, matched_by=matched_by, source=source)
    target = domain.next_stage(lead.stage, "lead.returned")
    if target:
        await move_stage(tx, lead, target, "lead.returned")
    tx.emit(
        "lead.captured",
        _captured(lead, lead.fit_score, duplicate=True, channel=data.channel, campaign=data.campaign, consent=consent),
        lead_id=lead.id,
    )
    _after(tx, ctx, lambda: ctx.metrics.duplicates.labels(matched_by).inc())
    return LeadCreated(
        lead_id=lead.id,
        fit_score=lead.fit_score,
        red_flags=lead.red_flag_names,
        stage=lead.stage,
        duplicate=True,
        matched_by=matched_by,
    )


async def _credit_referrer(tx: UnitOfWork, referrer_id: uuid.UUID, referred: uuid.UUID, *, cause: str) -> None:
    referrer = await _lead_for_event(tx, referrer_id)
    if referrer is None:
        return
    referrer.referrals = (referrer.referrals or 0) + 1
    _log(tx, referrer.id, "referral.credited", referred_lead_id=referred)
    target = domain.next_stage(referrer.stage, "referral.made")
    if target:
        await move_stage(tx, referrer, target, cause)


# --------------------------------------------------------------------------- batches


async def prefetch(tx: UnitOfWork, ctx: Context, events: list[ev.Envelope]) -> None:
    """Read up front, in a few queries, what a batch's events would each query (with a flush of
    everything pending before every query): their leads and the leads those were merged into,
    ids with no lead (so a miss costs nothing), and for referrals the ICP and the leads their
    captures dedupe against. Everything here lives in this transaction only."""
    await _load_leads(tx, {e.lead_id for e in events if e.lead_id is not None})
    referred: list[LeadIn] = []
    for event in events:
        if event.type == "referral.made":
            try:
                referred.append(_referred_lead(event.payload(), None))  # type: ignore[arg-type]
            except ValueError:
                continue  # the handler rejects it
    if referred:
        await _read_icp(tx)  # a fresh database's seed version is still written by the first capture
        known = await _known_leads(tx, referred)
        tx.memo[_KNOWN] = known
        found = [lead for lead in (*known.by_key.values(), *known.by_email.values()) if lead is not None]
        await _load_leads(tx, {lead.merged_into for lead in found if lead.merged_into is not None})


def _chunks(values: set[Any], size: int = 500) -> list[list[Any]]:
    ordered = sorted(values)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


async def _load_leads(tx: UnitOfWork, ids: set[uuid.UUID]) -> None:
    """Load these leads and, hop by hop, the leads they were merged into (as ``_lead_for_event``
    follows them), into the memo, with None for an id that has no lead. (The memo also keeps
    them alive: the session's identity map holds unchanged objects only weakly.)"""
    known: dict[uuid.UUID, Lead | None] = tx.memo.setdefault(_LEADS, {})
    for _ in range(MERGE_HOPS + 1):
        ids = ids - known.keys()
        if not ids:
            return
        known.update(dict.fromkeys(ids))
        found: list[Lead] = []
        for chunk in _chunks(ids):
            found.extend(await tx.session.scalars(select(Lead).where(Lead.id.in_(chunk))))
        known.update((lead.id, lead) for lead in found)
        ids = {lead.merged_into for lead in found if lead.merged_into is not None}


async def _known_leads(tx: UnitOfWork, bodies: list[LeadIn]) -> _KnownLeads:
    """The leads these captures could be duplicates of, as ``_find_duplicate`` would query them."""
    known = _KnownLeads(
        by_key=dict.fromkeys(domain.normalise_email(b.email) for b in bodies),
        by_email=dict.fromkeys(b.email for b in bodies),
        by_company={company: [] for b in bodies if (company := domain.company_domain(b.email)) is not None},
    )
    for start in range(0, len(bodies), 500):
        part = bodies[start : start + 500]
        keys, emails = {domain.normalise_email(b.email) for b in part}, {b.email for b in part}
        by_address = select(Lead).where(or_(Lead.email_key.in_(sorted(keys)), Lead.email.in_(sorted(emails))))
        for lead in await tx.session.scalars(by_address):
            if lead.email_key in known.by_key:
                known.by_key[lead.email_key] = lead
            if lead.email in known.by_email:
                known.by_email[lead.email] = lead
    for chunk in _chunks(set(known.by_company)):
        # Each company's first COMPANY_CANDIDATES live leads, for all companies in one query.
        rank = func.row_number().over(partition_by=Lead.company_domain, order_by=(Lead.created_at, Lead.id))
        ranked = (
            select(Lead.id, rank.label("n"))
            .where(Lead.company_domain.in_(chunk), Lead.merged_into.is_(None), Lead.erased_at.is_(None))
            .subquery()
        )
        first = select(Lead).join(ranked, ranked.c.id == Lead.id).where(ranked.c.n <= COMPANY_CANDIDATES)
        for lead in await tx.session.scalars(first):
            known.by_company[lead.company_domain].append(lead)  # type: ignore[index]
    for same in known.by_company.values():
        same.sort(key=_capture_order)
    return known


def _remember_captured(tx: UnitOfWork, lead: Lead) -> None:
    """A new lead stays pending until the commit: later events of the batch find it here."""
    tx.memo.setdefault(_LEADS, {})[lead.id] = lead
    known: _KnownLeads | None = tx.memo.get(_KNOWN)
    if known is not None:
        known.captured(lead)


# --------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    lead_ids: list[uuid.UUID] = field(default_factory=list)


async def import_rows(tx: UnitOfWork, ctx: Context, rows: list[tuple[int, LeadIn | list[str]]]) -> ImportReport:
    """Capture every valid row; each invalid one is reported with why (the good rows go in).
    ``rows`` holds (row number, validated lead or the row's errors)."""
    icp, _, _ = await current_icp(tx, ctx)
    report = ImportReport(rows=len(rows))
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

    tx.after_commit(count)
    return report


# --------------------------------------------------------------------------- red flags


async def raise_red_flag(
    tx: UnitOfWork, lead: Lead, name: str, evidence: str, *, source: str
) -> bool:
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
    _log(tx, lead.id, "red_flag.raised", name=name, evidence=evidence, source=source)
    return True


async def note_red_flag(tx: UnitOfWork, lead_id: uuid.UUID, name: str, evidence: str) -> Lead:
    """Sales notes a signal seen during the sale (refused a deposit, boss reversed direction...)."""
    lead = await _live_lead(tx, lead_id)
    await raise_red_flag(tx, lead, name, evidence, source="sales")
    return lead


async def clear_red_flag(tx: UnitOfWork, lead_id: uuid.UUID, name: str, reason: str | None) -> Lead:
    lead = await _live_lead(tx, lead_id)
    if name not in lead.red_flag_names:
        raise NotFound(f"lead {lead_id} has no red flag {name!r}")
    lead.red_flags = [f for f in lead.red_flags if f["name"] != name]
    lead.updated_at = tx.now()
    await tx.session.execute(delete(LeadRedFlag).where(LeadRedFlag.lead_id == lead.id, LeadRedFlag.name == name))
    _log(tx, lead.id, "red_flag.cleared", name=name, reason=reason)
    return lead


# --------------------------------------------------------------------------- qualification


async def qualify_lead(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, data: QualificationIn) -> tuple[Lead, domain.Qualification]:
    """BANT: answers not given are read from the intake; publishes ``lead.qualified`` or
    ``lead.disqualified`` with its reasons, and moves the stage."""
    lead = await _live_lead(tx, lead_id)
    suggested = domain.suggested_bant(_intake_of(lead), minimum_budget=ctx.settings.qualification_minimum_budget)
    bant = domain.Bant(
        budget=suggested.budget if data.budget is None else data.budget,
        authority=suggested.authority if data.authority is None else data.authority,
        need=suggested.need if data.need is None else data.need,
        timeline=suggested.timeline if data.timeline is None else data.timeline,
    )
    result = domain.qualify(bant, required=ctx.settings.qualification_required, extra_reasons=data.reasons)
    now = tx.now()
    lead.qualification = {
        "budget": bant.budget, "authority": bant.authority, "need": bant.need, "timeline": bant.timeline,
        "qualified": result.qualified, "reasons": result.reasons, "notes": data.notes, "at": now.isoformat(),
    }
    lead.qualified_at = now
    lead.updated_at = now
    if result.qualified:
        tx.emit(
            "lead.qualified",
            ev.LeadQualified(budget=bant.budget, authority=bant.authority, need=bant.need, timeline=bant.timeline, notes=data.notes),
            lead_id=lead.id,
        )
        _log(tx, lead.id, "lead.qualified", missing=result.missing or None, notes=data.notes)
        cause = "lead.qualified"
        _after(tx, ctx, ctx.metrics.qualified.inc)
    else:
        tx.emit("lead.disqualified", ev.LeadDisqualified(reasons=result.reasons), lead_id=lead.id)
        _log(tx, lead.id, "lead.disqualified", reasons=result.reasons, notes=data.notes)
        cause = "lead.disqualified"
        reasons = list(result.reasons)

        def count() -> None:
            for reason in reasons:
                ctx.metrics.disqualified.labels(reason).inc()

        _after(tx, ctx, count)
    target = domain.next_stage(lead.stage, cause)
    if target:
        await move_stage(tx, lead, target, cause)
    return lead, result


# --------------------------------------------------------------------------- stages


async def stage_history(tx: UnitOfWork, lead_id: uuid.UUID) -> list[StageChange]:
    rows = await tx.session.scalars(select(StageChange).where(StageChange.lead_id == lead_id).order_by(StageChange.id))
    return list(rows)


async def activity(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Activity]:
    rows = await tx.session.scalars(select(Activity).where(Activity.lead_id == lead_id).order_by(Activity.id))
    return list(rows)


async def touches(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Touch]:
    rows = await tx.session.scalars(select(Touch).where(Touch.lead_id == lead_id).order_by(Touch.id))
    return list(rows)


async def move_stage(tx: UnitOfWork, lead: Lead, to_stage: str, cause: str) -> None:
    """Move the lead and say so (``lead.stage_changed``), with the cause in the history."""
    now = tx.now()
    previous = lead.stage
    lead.stage = to_stage
    lead.updated_at = now
    tx.session.add(StageChange(lead_id=lead.id, from_stage=previous, to_stage=to_stage, cause=cause, at=now))
    _log(tx, lead.id, "lead.stage_changed", from_stage=previous, to_stage=to_stage, cause=cause)
    tx.emit(
        "lead.stage_changed",
        ev.LeadStageChanged(from_stage=previous, to_stage=to_stage, cause=cause),  # type: ignore[arg-type]
        lead_id=lead.id,
    )


async def set_stage(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, stage: str, reason: str) -> Lead:
    """Sales moves a lead by hand, forwards or backwards (a churned client who is back)."""
    lead = await _live_lead(tx, lead_id)
    if stage not in domain.STAGES:
        raise Invalid(f"unknown stage {stage!r}; known: {', '.join(domain.STAGES)}")
    if stage != lead.stage:
        await move_stage(tx, lead, stage, f"manual: {reason}")
        _after(tx, ctx, lambda: None)
    return lead


async def apply_stage_event(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID | None, cause: str, *, occurred_at: datetime | None = None
) -> None:
    """An event from another service that may move a lead in the funnel (not back out of a
    stage entered after the event happened: events on different topics arrive in any order)."""
    lead = await _lead_for_event(tx, lead_id)
    if lead is None:
        return  # a person we never captured (or erased): nothing to move
    _log(tx, lead.id, cause)
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
        await move_stage(tx, lead, target, cause)
        _after(tx, ctx, lambda: None)


# --------------------------------------------------------------------------- engagement


def _points(ctx: Context, kind: str) -> Decimal:
    s = ctx.settings
    return {
        "email.opened": s.engagement_open_points,
        "email.clicked": s.engagement_click_points,
        "email.replied": s.engagement_reply_points,
        "feedback.received": s.engagement_feedback_points,
        "takeover.started": s.engagement_takeover_points,
    }.get(kind, Decimal(0))


async def record_engagement(tx: UnitOfWork, ctx: Context, event: ev.Envelope, **detail: Any) -> None:
    """An open, click, reply, feedback or a human taking over: engagement points that fade over
    time (kept apart from fit); a click, reply or feedback also shows interest."""
    lead = await _lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    at = min(event.occurred_at, tx.now())
    points, since = domain.engage(
        lead.engagement_points or Decimal(0),
        since=lead.engagement_at,
        at=at,
        weight=_points(ctx, event.type),
        half_life_days=ctx.settings.engagement_half_life_days,
    )
    lead.engagement_points, lead.engagement_at = points, since
    lead.engagement_score = engagement_now(ctx, lead, tx.now())
    lead.updated_at = tx.now()
    _log(tx, lead.id, event.type, engagement_score=lead.engagement_score, **detail)
    target = domain.next_stage(lead.stage, event.type)
    if target is not None:
        await move_stage(tx, lead, target, event.type)
        _after(tx, ctx, lambda: None)


async def sales_ready(tx: UnitOfWork, ctx: Context, event: ev.Envelope, data: ev.LeadSalesReady) -> None:
    """Nurture says the lead is warm enough for sales: the stage moves to consideration."""
    lead = await _lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    now = tx.now()
    current = engagement_now(ctx, lead, now)
    if data.engagement_score > current:
        lead.engagement_points, lead.engagement_at = Decimal(data.engagement_score), now
        lead.engagement_score = data.engagement_score
    _log(tx, lead.id, "lead.sales_ready", engagement_score=data.engagement_score, reason=data.reason)
    target = domain.next_stage(lead.stage, "lead.sales_ready")
    if target is not None:
        await move_stage(tx, lead, target, "lead.sales_ready")
        _after(tx, ctx, lambda: None)


async def unsubscribed(tx: UnitOfWork, event: ev.Envelope, data: ev.LeadUnsubscribed) -> None:
    lead = await _lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    if data.channel == "email":
        lead.consent_marketing = False
    lead.updated_at = tx.now()
    _log(tx, lead.id, "lead.unsubscribed", channel=data.channel)


async def tier_changed(tx: UnitOfWork, event: ev.Envelope, data: ev.ClientTierChanged) -> None:
    """Retention reviewed the client's tier: kept on the lead (the next deposit share reads it)."""
    lead = await _lead_for_event(tx, event.lead_id)
    if lead is None:
        return
    lead.tier = data.to_tier
    lead.tier_reasons = list(data.reasons)
    lead.updated_at = tx.now()
    _log(tx, lead.id, "client.tier_changed", from_tier=data.from_tier, to_tier=data.to_tier, reasons=data.reasons or None)


async def referral_made(tx: UnitOfWork, ctx: Context, event: ev.Envelope, data: ev.ReferralMade) -> None:
    """A client referred someone: a new lead on channel ``referral``, credited to the referrer
    (who moves to ``advocacy`` when a client). A person we already know gets a touch instead."""
    referrer = await _lead_for_event(tx, event.lead_id)
    try:
        body = _referred_lead(data, referrer.id if referrer is not None else None)
    except ValueError as exc:
        raise RejectEvent(f"referral {data.referral_id} cannot become a lead: {exc}") from exc
    created = await capture_lead(tx, ctx, body, source="referral.made", referral_cause="referral.made")
    if not created.duplicate:
        _log(tx, created.lead_id, "referral.made", referral_id=data.referral_id, referred_by=event.lead_id, note=data.note)


def _referred_lead(data: ev.ReferralMade, referred_by: uuid.UUID | None) -> LeadIn:
    return LeadIn(
        name=data.name,
        email=data.email,
        company=data.company,
        channel="referral",
        campaign=f"referral:{data.referral_id}",
        referred_by=referred_by,
    )


# --------------------------------------------------------------------------- deals


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
    }


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> Deal:
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id}")
    return deal


async def deals_of(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Deal]:
    rows = await tx.session.scalars(select(Deal).where(Deal.lead_id == lead_id).order_by(Deal.created_at, Deal.id))
    return list(rows)


async def propose_deal(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, data: DealIn) -> Deal:
    """Write an estimate for a lead (``deal.proposed``)."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased; a deal needs a person")
    if lead.merged_into is not None:
        raise Conflict(f"lead {lead_id} was merged into {lead.merged_into}; write the estimate there")
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
    _log(tx, lead.id, "deal.proposed", deal_id=deal.id, title=deal.title, total=deal.total, currency=deal.currency)
    target = domain.next_stage(lead.stage, "deal.proposed")
    if target:
        await move_stage(tx, lead, target, "deal.proposed")
    total, currency = deal.total, deal.currency
    _after(tx, ctx, lambda: ctx.metrics.deal("proposed", total, currency))
    return deal


async def win_deal(
    tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, *, signed_by: str, signed_at: datetime | None
) -> Deal:
    """A signed estimate becomes a won deal (``deal.won``) with the deposit share its risk asks:
    no signature, no deal."""
    deal = await get_deal(tx, deal_id)
    if deal.status == "won":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be won")
    if not signed_by.strip():
        raise Invalid("signed_by is required: no signature, no deal")
    now = tx.now()
    if signed_at is not None and signed_at > now + timedelta(minutes=5):
        raise Invalid(f"signed_at {signed_at.isoformat()} is in the future; an estimate is won once it is signed")
    lead = await get_lead(tx, deal.lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead.id} was erased; a deal needs a person")
    settings = ctx.settings
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
    earlier_wins = await tx.session.scalar(
        select(func.count()).select_from(Deal).where(Deal.lead_id == lead.id, Deal.status == "won")
    )
    deal.status = "won"
    deal.signed_by = signed_by.strip()
    deal.signed_at = signed_at or now
    deal.deposit_share = share
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
            tier=lead.tier,  # type: ignore[arg-type]
        ),
        lead_id=lead.id,
    )
    _log(tx, lead.id, "deal.won", deal_id=deal.id, signed_by=deal.signed_by, deposit_share=share, total=deal.total,
         currency=deal.currency)
    if earlier_wins:
        target = domain.next_stage(lead.stage, "repeat_deal.won")
        if target:
            await move_stage(tx, lead, target, "repeat_deal.won")
    total, currency = deal.total, deal.currency
    _after(tx, ctx, lambda: ctx.metrics.deal("won", total, currency))
    return deal


async def lose_deal(tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, reason: str) -> Deal:
    deal = await get_deal(tx, deal_id)
    if deal.status == "lost":
        return deal
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed deal can be lost")
    deal.status = "lost"
    deal.lost_reason = reason
    tx.emit("deal.lost", ev.DealLost(deal_id=deal.id, reason=reason), lead_id=deal.lead_id)
    _log(tx, deal.lead_id, "deal.lost", deal_id=deal.id, reason=reason)
    total, currency = deal.total, deal.currency
    _after(tx, ctx, lambda: ctx.metrics.deal("lost", total, currency))
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
    used: dict[int, Decimal] = {}
    for cr in earlier:
        if cr.in_scope and cr.line is not None and cr.hours is not None:
            used[cr.line] = used.get(cr.line, Decimal(0)) + cr.hours
    try:
        decision = domain.assess_change(
            deal.lines,
            description=data.description,
            hours=data.hours,
            amount=data.amount,
            hourly_rate=deal.hourly_rate,
            used_hours=used,
            line=data.line,
            in_scope=data.in_scope,
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    request = ChangeRequest(
        id=uuid.uuid4(),
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
    _log(tx, lead.id, "deal.change_requested", deal_id=deal.id, request_id=request.id, in_scope=decision.in_scope,
         amount=decision.amount, reason=decision.reason)
    total_requests = len(earlier) + 1
    if total_requests >= ctx.settings.changes_mind_after:
        await raise_red_flag(
            tx, lead, "changes_mind_often", f"{total_requests} change requests on deal {deal.id}", source="change_requests"
        )
    scope = "in" if decision.in_scope else "out"
    _after(tx, ctx, lambda: ctx.metrics.change_requests.labels(scope).inc())
    return request


async def change_requests_of(tx: UnitOfWork, deal_id: uuid.UUID) -> list[ChangeRequest]:
    rows = await tx.session.scalars(
        select(ChangeRequest).where(ChangeRequest.deal_id == deal_id).order_by(ChangeRequest.created_at, ChangeRequest.id)
    )
    return list(rows)


# --------------------------------------------------------------------------- spend


async def record_spend(tx: UnitOfWork, channel: str, data: SpendIn) -> tuple[ChannelSpend, bool]:
    """Money spent on a channel over a period (``channel.spend_recorded``), for CAC. Recording
    the same channel, period and currency again corrects it (the event carries the new amount)."""
    channel = channel.lower()
    if channel not in domain.CHANNELS:
        raise Invalid(f"unknown channel {channel!r}; known: {', '.join(sorted(domain.CHANNELS))}")
    start, end = data.bounds()
    row = await tx.session.scalar(
        select(ChannelSpend).where(
            ChannelSpend.channel == channel,
            ChannelSpend.period_start == start,
            ChannelSpend.period_end == end,
            ChannelSpend.currency == data.currency,
        )
    )
    replaced = row is not None
    if row is None:
        row = ChannelSpend(id=uuid.uuid4(), channel=channel, period_start=start, period_end=end, currency=data.currency,
                           amount=data.amount, recorded_at=tx.now())
        tx.session.add(row)
    else:
        row.amount = data.amount
        row.recorded_at = tx.now()
    tx.emit(
        "channel.spend_recorded",
        ev.ChannelSpendRecorded(channel=channel, period_start=start, period_end=end, amount=data.amount, currency=data.currency),
        lead_id=None,
    )
    return row, replaced


async def channels(tx: UnitOfWork) -> list[dict[str, Any]]:
    """Per channel: spend by currency, leads, clients (reached `action`), and CAC."""
    spend_rows = await tx.session.execute(select(ChannelSpend.channel, ChannelSpend.currency, ChannelSpend.amount))
    spend: dict[str, dict[str, Decimal]] = {}
    for channel, currency, amount in spend_rows.all():
        spend.setdefault(channel, {}).setdefault(currency, Decimal(0))
        spend[channel][currency] += amount
    lead_rows = await tx.session.execute(
        select(Lead.channel, func.count()).where(Lead.merged_into.is_(None)).group_by(Lead.channel)
    )
    leads = dict(lead_rows.all())
    client_rows = await tx.session.execute(
        select(Lead.channel, func.count(func.distinct(StageChange.lead_id)))
        .join(StageChange, StageChange.lead_id == Lead.id)
        .where(StageChange.to_stage == "action", Lead.merged_into.is_(None))
        .group_by(Lead.channel)
    )
    clients = dict(client_rows.all())
    out = []
    for channel in sorted(set(spend) | set(leads)):
        n_clients = clients.get(channel, 0)
        out.append(
            {
                "channel": channel,
                "kind": "inbound" if channel in domain.INBOUND_CHANNELS else "outbound",
                "leads": leads.get(channel, 0),
                "clients": n_clients,
                "spend": [{"amount": str(a), "currency": c} for c, a in sorted(spend.get(channel, {}).items())],
                "cost_per_lead": [
                    {"amount": str((a / leads[channel]).quantize(Decimal("0.01"))), "currency": c}
                    for c, a in sorted(spend.get(channel, {}).items()) if leads.get(channel)
                ],
                "cac": [
                    {"amount": str((a / n_clients).quantize(Decimal("0.01"))), "currency": c}
                    for c, a in sorted(spend.get(channel, {}).items()) if n_clients
                ],
            }
        )
    return out


# --------------------------------------------------------------------------- erasure and merge


async def erase_lead(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> Lead:
    """Remove the person's personal data everywhere in this service and tell the others
    (``lead.erased``). Channel, stage, scores and amounts stay, anonymous, so counts hold.
    Erasing again changes nothing and publishes nothing."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        return lead
    now = tx.now()
    tx.memo.pop(_KNOWN, None)  # its email, name and liveness change
    for name in ("name", "email", "email_key", "company", "company_domain", "job_title", "brief", "timeline",
                 "legal_basis", "campaign"):
        setattr(lead, name, None)
    lead.needs, lead.utm = [], {}
    lead.red_flags = [{"name": f["name"], "evidence": ERASED, "source": f.get("source"), "at": f.get("at")} for f in lead.red_flags]
    if lead.qualification:
        lead.qualification = {k: v for k, v in lead.qualification.items() if k != "notes"}
    lead.consent_marketing = False
    lead.erased_at = now
    lead.updated_at = now
    await tx.session.execute(
        update(Touch).where(Touch.lead_id == lead.id).values(contact_name=None, contact_email=None, utm=None, campaign=None)
    )
    await tx.session.execute(update(Deal).where(Deal.lead_id == lead.id, Deal.signed_by.is_not(None)).values(signed_by=ERASED))
    # Free text in the timeline may name the person (who signed, a deal's title, a campaign
    # named after them): keep what happened, drop what was said.
    for entry in await activity(tx, lead.id):
        entry.detail = {k: v for k, v in (entry.detail or {}).items() if k not in ERASED_DETAIL}
    tx.session.add(Activity(lead_id=lead.id, type="lead.erased", at=now, detail={}))
    await forget_person(tx, lead.id)
    tx.emit("lead.erased", ev.LeadErased(requested_at=now), lead_id=lead.id)
    _after(tx, ctx, ctx.metrics.erased.inc)
    return lead


async def merge_leads(tx: UnitOfWork, ctx: Context, kept_id: uuid.UUID, duplicate_id: uuid.UUID, reason: str | None) -> Lead:
    """Merge a duplicate into the lead that stays: touches, red flags, engagement and referrals
    move over; the duplicate answers with ``merged_into`` from then on. Logged on both."""
    if kept_id == duplicate_id:
        raise Invalid("a lead cannot be merged into itself")
    kept = await _live_lead(tx, kept_id)
    duplicate = await get_lead(tx, duplicate_id)
    if duplicate.merged_into == kept.id:
        return kept
    if duplicate.merged_into is not None:
        raise Conflict(f"lead {duplicate_id} was already merged into {duplicate.merged_into}")
    if duplicate.erased_at is not None:
        raise Conflict(f"lead {duplicate_id} was erased")
    if kept.id == duplicate.id:
        raise Invalid("a lead cannot be merged into itself")
    if await deals_of(tx, duplicate.id):
        # Other services know those deals (invoices, subscriptions) under the duplicate's id.
        raise Conflict(f"lead {duplicate_id} has deals; merge the other way round (keep {duplicate_id})")
    now = tx.now()
    tx.memo.pop(_KNOWN, None)  # the duplicate stops being a live candidate
    await tx.session.execute(update(Touch).where(Touch.lead_id == duplicate.id).values(lead_id=kept.id))
    for flag in duplicate.red_flags or []:
        await raise_red_flag(tx, kept, flag["name"], flag.get("evidence") or "", source=f"merge:{duplicate.id}")
    half_life = ctx.settings.engagement_half_life_days
    points = domain.decayed(duplicate.engagement_points or Decimal(0), since=duplicate.engagement_at, now=now, half_life_days=half_life)
    kept.engagement_points, kept.engagement_at = domain.engage(
        kept.engagement_points or Decimal(0), since=kept.engagement_at, at=now, weight=points, half_life_days=half_life
    )
    kept.referrals = (kept.referrals or 0) + (duplicate.referrals or 0)
    kept.consent_marketing = kept.consent_marketing or duplicate.consent_marketing
    for name in ("company", "job_title", "industry", "employees", "annual_revenue", "country", "brief", "budget", "currency", "timeline"):
        if getattr(kept, name) is None and getattr(duplicate, name) is not None:
            setattr(kept, name, getattr(duplicate, name))
    kept.updated_at = now
    duplicate.merged_into = kept.id
    duplicate.updated_at = now
    tx.session.add(Merge(kept_id=kept.id, merged_id=duplicate.id, reason=reason, at=now))
    _log(tx, kept.id, "lead.merged", merged_id=duplicate.id, reason=reason)
    _log(tx, duplicate.id, "lead.merged_into", kept_id=kept.id, reason=reason)
    log.info("lead %s merged into %s (%s)", duplicate.id, kept.id, reason or "no reason given")
    _after(tx, ctx, lambda: None)
    return kept


# --------------------------------------------------------------------------- queries


@dataclass
class LeadFilter:
    stage: str | None = None
    tier: str | None = None
    channel: str | None = None
    min_fit: int | None = None
    red_flag: str | None = None
    q: str | None = None
    include_erased: bool = False


_SORTS = {
    "created_at": Lead.created_at.asc(),
    "-created_at": Lead.created_at.desc(),
    "fit_score": Lead.fit_score.asc(),
    "-fit_score": Lead.fit_score.desc(),
    "updated_at": Lead.updated_at.asc(),
    "-updated_at": Lead.updated_at.desc(),
}


async def list_leads(tx: UnitOfWork, f: LeadFilter, *, sort: str, limit: int, offset: int) -> tuple[list[Lead], int]:
    if f.stage is not None and f.stage not in domain.STAGES:
        raise Invalid(f"unknown stage {f.stage!r}; known: {', '.join(domain.STAGES)}")
    if f.tier is not None and f.tier not in ("best", "good", "tolerable", "fire"):
        raise Invalid(f"unknown tier {f.tier!r}; known: best, good, tolerable, fire")
    if f.channel is not None and f.channel not in domain.CHANNELS:
        raise Invalid(f"unknown channel {f.channel!r}; known: {', '.join(sorted(domain.CHANNELS))}")
    if f.red_flag is not None and f.red_flag not in domain.RED_FLAGS:
        raise Invalid(f"unknown red flag {f.red_flag!r}; known: {', '.join(domain.RED_FLAGS)}")
    if sort not in _SORTS:
        raise Invalid(f"unknown sort {sort!r}; known: {', '.join(_SORTS)}")
    query = select(Lead).where(Lead.merged_into.is_(None))
    if not f.include_erased:
        query = query.where(Lead.erased_at.is_(None))
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
            or_(func.lower(Lead.name).like(like), func.lower(Lead.email).like(like), func.lower(Lead.company).like(like))
        )
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(query.order_by(_SORTS[sort], Lead.id).limit(limit).offset(offset))
    return list(rows), total or 0


async def funnel(
    tx: UnitOfWork, *, channel: str | None, since: date | None, until: date | None, grain: str, tz: Any
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
    rows = [(lead_id, ch, created, stage, domain.reached_rank([stage, *reached.get(lead_id, [])]))
            for lead_id, ch, created, stage in leads]

    def summary(subset: list[tuple]) -> dict[str, Any]:
        counts = domain.funnel_counts((stage, rank) for _, _, _, stage, rank in subset)
        return {
            "total": counts.total,
            "stages": counts.stages,
            "reached": counts.reached,
            "conversion": counts.conversion(),
            "overall_conversion": counts.overall(),
        }

    by_channel: dict[str, list[tuple]] = {}
    by_period: dict[str, list[tuple]] = {}
    for row in rows:
        by_channel.setdefault(row[1], []).append(row)
        by_period.setdefault(domain.period_of(row[2], grain), []).append(row)
    return {
        **summary(rows),
        "by_channel": {ch: summary(sub) for ch, sub in sorted(by_channel.items())},
        "by_period": [{"period": p, **summary(sub)} for p, sub in sorted(by_period.items())],
        "grain": grain,
    }

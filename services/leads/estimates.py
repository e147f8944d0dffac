"""Estimates the client signs: revisions that keep every earlier version, and the signed public
link where the client reads the latest version and accepts it (the rules are
``domain.estimates``; winning the deal is ``deals.win_deal``, whoever signs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from services.leads import deals, returning
from services.leads.commands import RevisionIn
from services.leads.context import Context
from services.leads.domain import estimates as rules
from services.leads.record import get_lead
from services.leads.store import Deal, EstimateVersion, Lead
from services.leads.timeline import log_activity
from shared import events as ev
from shared.errors import Conflict, DomainError, Invalid
from shared.uow import UnitOfWork

# The languages the acceptance pages speak; a lead in any other reads English.
LANGUAGES = ("en", "bn", "fa")

# Refusals of a link, and their HTTP answer.
REFUSAL_STATUS = {
    rules.LinkState.BAD_SIGNATURE: 403,
    rules.LinkState.ALREADY_ACCEPTED: 409,
    rules.LinkState.CLOSED: 409,
    rules.LinkState.SUPERSEDED: 410,
    rules.LinkState.EXPIRED: 410,
}


def page_language(lead: Lead | None) -> str:
    language = (lead.language if lead is not None else None) or "en"
    return language if language in LANGUAGES else "en"


class LinkRefused(DomainError):
    """An acceptance link that cannot be used (now): ``reason`` names why for the page, in the
    lead's ``language``; ``status`` is the HTTP answer (403 bad signature, 409 no longer open,
    410 superseded or expired, 422 no name)."""

    def __init__(self, reason: str, status: int, message: str, *, language: str = "en") -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.language = language


async def versions_of(tx: UnitOfWork, deal_id: uuid.UUID) -> list[EstimateVersion]:
    """Every version of the estimate, oldest first (``NotFound`` for an unknown deal)."""
    await deals.get_deal(tx, deal_id)
    rows = await tx.session.scalars(
        select(EstimateVersion).where(EstimateVersion.deal_id == deal_id).order_by(EstimateVersion.version)
    )
    return list(rows)


async def revise_deal(tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, data: RevisionIn) -> Deal:
    """A proposed estimate rewritten (``deal.revised``): the deal keeps its id, its version goes
    up by one, the earlier versions are kept and their links no longer accept."""
    deal = await deals.get_deal(tx, deal_id)
    if deal.status != "proposed":
        raise Conflict(f"deal {deal_id} is {deal.status}; only a proposed estimate can be revised")
    lead = await get_lead(tx, deal.lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead.id} was erased; a deal needs a person")
    try:
        estimate = data.as_deal(deal.kind)
    except ValueError as exc:
        raise Invalid(f"not an estimate: {exc}") from None
    # A returning client's revision carries the surcharge as their first estimate did.
    estimate = await returning.apply_surcharge(lead, estimate)
    if estimate.submission_deadline is not None and estimate.submission_deadline <= tx.now():
        raise Invalid("submission_deadline: a tender's deadline must be in the future")
    if deal.valid_until is None and await tx.session.get(EstimateVersion, (deal.id, deal.version)) is None:
        # A deal written before versions were kept: its first content is kept as it was.
        _keep_unversioned(tx, deal)
    previous = deal.version
    deal.title = estimate.title
    deal.kind = estimate.kind
    deal.currency = estimate.currency
    deal.lines = [line.model_dump(mode="json") for line in estimate.lines]
    deal.total = estimate.total
    deal.monthly_fee = estimate.monthly_fee
    deal.included_hours = estimate.included_hours
    deal.hourly_rate = estimate.hourly_rate
    if estimate.submission_deadline is not None:
        deal.submission_deadline = estimate.submission_deadline
    deal.version = previous + 1
    deals.write_version(tx, ctx, deal, valid_until=estimate.valid_until)
    assert deal.digest is not None and deal.valid_until is not None  # just written
    fields = deals.deal_fields(deal)
    tx.emit(
        "deal.revised",
        ev.DealRevised(**fields, acceptance_url=deals.acceptance_link(ctx, deal)),
        lead_id=lead.id,
    )
    log_activity(
        tx,
        lead.id,
        "deal.revised",
        deal_id=deal.id,
        version=deal.version,
        title=deal.title,
        total=deal.total,
        currency=deal.currency,
    )
    return deal


def _keep_unversioned(tx: UnitOfWork, deal: Deal) -> None:
    content = rules.content_of(
        title=deal.title,
        kind=deal.kind,
        currency=deal.currency,
        lines=deal.lines,
        total=deal.total,
        monthly_fee=deal.monthly_fee,
        included_hours=deal.included_hours,
        hourly_rate=deal.hourly_rate,
        valid_until=None,
    )
    tx.session.add(
        EstimateVersion(
            deal_id=deal.id,
            version=deal.version,
            content=content,
            digest=rules.digest_of(content),
            created_at=deal.created_at,
            valid_until=None,
        )
    )


# --------------------------------------------------------------------------- the link


@dataclass(frozen=True)
class EstimatePage:
    """What the client reads on the link: the version's content, the deposit share they will be
    asked (as ``win_deal`` would ask it now) and its amount, in the lead's language."""

    deal: Deal
    version: EstimateVersion
    language: str
    deposit_share: Decimal
    deposit_amount: Decimal


async def open_estimate(tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, *, version: int, token: str) -> EstimatePage:
    """The version a link opens, while it may be accepted; ``LinkRefused`` says why not."""
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise LinkRefused("bad_signature", 403, "this link is not valid")
    lead = await get_lead(tx, deal.lead_id)
    language = page_language(lead)
    row = await tx.session.get(EstimateVersion, (deal.id, version))
    signature_ok = row is not None and (
        row.valid_until is not None
        and rules.token_matches(
            ctx.settings.secret_key.get_secret_value(),
            token,
            deal_id=deal.id,
            version=version,
            expires_at=row.valid_until,
        )
    )
    state = rules.link_state(
        rules.LinkCheck(
            signature_ok=signature_ok,
            status=deal.status,
            signed_via=deal.signed_via,
            version=version,
            latest_version=deal.version,
            valid_until=row.valid_until if row is not None else None,
        ),
        now=tx.now(),
    )
    if state is rules.LinkState.OPEN and lead.erased_at is not None:
        state = rules.LinkState.CLOSED
    if state is not rules.LinkState.OPEN:
        raise LinkRefused(state.value, REFUSAL_STATUS[state], _refusal_message(state, deal), language=language)
    assert row is not None  # a link with no version has no valid signature
    share = ctx.settings.deposit.share(lead.red_flag_names, fit=lead.fit_score, tier=lead.tier)
    amount = rules.deposit_amount(kind=deal.kind, total=deal.total, monthly_fee=deal.monthly_fee, share=share)
    return EstimatePage(deal, row, language, share, amount)


def _refusal_message(state: rules.LinkState, deal: Deal) -> str:
    match state:
        case rules.LinkState.BAD_SIGNATURE:
            return "this link is not valid (bad signature)"
        case rules.LinkState.ALREADY_ACCEPTED:
            return f"the estimate was already accepted (version {deal.accepted_version})"
        case rules.LinkState.CLOSED:
            return f"the estimate is no longer open: the deal is {deal.status}"
        case rules.LinkState.SUPERSEDED:
            return f"superseded: the estimate was revised (version {deal.version} replaces this one)"
        case _:
            return "expired: the estimate is past its valid_until"


async def accept_estimate(
    tx: UnitOfWork, ctx: Context, deal_id: uuid.UUID, *, version: int, token: str, name: str | None, ip: str | None
) -> EstimatePage:
    """The client accepts the version the link opens with their typed name: the deal is won
    (``deal.won`` with ``signed_via`` link, the address, the version and its digest)."""
    page = await open_estimate(tx, ctx, deal_id, version=version, token=token)
    try:
        signed_by = rules.accepted_name(name)
    except ValueError as exc:
        raise LinkRefused("name_required", 422, str(exc), language=page.language) from None
    await deals.win_deal(
        tx,
        ctx,
        deal_id,
        signed_by=signed_by,
        signed_at=None,
        signing=deals.Signing(via="link", ip=ip, version=version, digest=page.version.digest),
    )
    return page

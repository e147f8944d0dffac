"""Privacy and identity: erasing a person's data on request, and merging a duplicate into the
lead that stays."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from sqlalchemy import delete, func, select, update

from services.leads.context import Context
from services.leads.deals import deals_of
from services.leads.exports import forget_exports
from services.leads.qualification import raise_red_flag
from services.leads.record import forget_dedupe_candidates, get_lead, live_lead
from services.leads.store import Account, Activity, Deal, Lead, Merge, Touch
from services.leads.timeline import activity, log_activity
from shared import events as ev
from shared.errors import Conflict, Invalid
from shared.privacy import forget_person
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

ERASED = "[erased]"
# The lead's personal data, cleared on erasure (channel, stage, scores and amounts stay).
ERASED_FIELDS = (
    "name",
    "email",
    "email_key",
    "company",
    "company_domain",
    "job_title",
    "brief",
    "timeline",
    "legal_basis",
    "campaign",
)
# Timeline detail an erasure drops: free text, and names (who signed, a title, a campaign).
ERASED_DETAIL = frozenset(
    {"notes", "evidence", "note", "comment", "reason", "signed_by", "title", "campaign", "description"}
)
# What a merge fills in on the kept lead from the duplicate, where the kept lead has nothing.
MERGE_FILLS = (
    "company",
    "job_title",
    "industry",
    "employees",
    "annual_revenue",
    "country",
    "brief",
    "budget",
    "currency",
    "timeline",
)


async def erase_lead(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> Lead:
    """Remove the person's personal data everywhere in this service and tell the others
    (``lead.erased``). Channel, stage, scores and amounts stay, anonymous, so counts hold.
    Erasing again changes nothing and publishes nothing."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        return lead
    now = tx.now()
    forget_dedupe_candidates(tx)  # its email, name and liveness change
    for name in ERASED_FIELDS:
        setattr(lead, name, None)
    lead.needs, lead.utm = [], {}
    lead.red_flags = [
        {"name": f["name"], "evidence": ERASED, "source": f.get("source"), "at": f.get("at")} for f in lead.red_flags
    ]
    if lead.qualification:
        lead.qualification = {k: v for k, v in lead.qualification.items() if k != "notes"}
    lead.consent_marketing = False
    lead.erased_at = now
    lead.updated_at = now
    await tx.session.execute(
        update(Touch)
        .where(Touch.lead_id == lead.id)
        .values(contact_name=None, contact_email=None, utm=None, campaign=None)
    )
    await tx.session.execute(
        update(Deal).where(Deal.lead_id == lead.id, Deal.signed_by.is_not(None)).values(signed_by=ERASED)
    )
    # The address an estimate was accepted from is the person's too (the digest and time stay).
    await tx.session.execute(update(Deal).where(Deal.lead_id == lead.id).values(signed_ip=None))
    # A company account that was only this person's goes with them (its name and domain are what
    # they typed); one that colleagues still belong to stays theirs.
    if lead.account_id is not None:
        account_id, lead.account_id = lead.account_id, None
        others = await tx.session.scalar(
            select(func.count()).select_from(Lead).where(Lead.account_id == account_id, Lead.erased_at.is_(None))
        )
        if not others:
            await tx.session.execute(delete(Account).where(Account.id == account_id))
    # Free text in the timeline may name the person (who signed, a deal's title, a campaign
    # named after them): keep what happened, drop what was said.
    for entry in await activity(tx, lead.id):
        entry.detail = {k: v for k, v in (entry.detail or {}).items() if k not in ERASED_DETAIL}
    tx.session.add(Activity(lead_id=lead.id, type="lead.erased", at=now, detail={}))
    # Exports of the person's data (issue 21, part 3): gone with them, parts and all.
    await forget_exports(tx, lead.id)
    await forget_person(tx, lead.id)
    tx.emit("lead.erased", ev.LeadErased(requested_at=now), lead_id=lead.id)
    # Their keys (and those of the duplicates merged into them) are destroyed: every event that
    # carried their personal data, on every topic and in every copy, can no longer be read.
    merged = list(await tx.session.scalars(select(Merge.merged_id).where(Merge.kept_id == lead.id)))
    await tx.destroy_keys([lead.id, *merged])
    return lead


async def merge_leads(
    tx: UnitOfWork, ctx: Context, *, kept_id: uuid.UUID, duplicate_id: uuid.UUID, reason: str | None
) -> Lead:
    """Merge a duplicate into the lead that stays: touches, red flags, engagement and referrals
    move over; the duplicate answers with ``merged_into`` from then on. Logged on both."""
    if kept_id == duplicate_id:
        raise Invalid("a lead cannot be merged into itself")
    kept = await live_lead(tx, kept_id)
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
    forget_dedupe_candidates(tx)  # the duplicate stops being a live candidate
    await tx.session.execute(update(Touch).where(Touch.lead_id == duplicate.id).values(lead_id=kept.id))
    for flag in duplicate.red_flags or []:
        await raise_red_flag(
            tx, kept, name=flag["name"], evidence=flag.get("evidence") or "", source=f"merge:{duplicate.id}"
        )
    kept.engagement_points, kept.engagement_at = ctx.settings.engagement.merged(
        kept.engagement_points or Decimal(0),
        kept_since=kept.engagement_at,
        duplicate=duplicate.engagement_points or Decimal(0),
        duplicate_since=duplicate.engagement_at,
        now=now,
    )
    kept.referrals = (kept.referrals or 0) + (duplicate.referrals or 0)
    kept.consent_marketing = kept.consent_marketing or duplicate.consent_marketing
    for name in MERGE_FILLS:
        if getattr(kept, name) is None and getattr(duplicate, name) is not None:
            setattr(kept, name, getattr(duplicate, name))
    kept.updated_at = now
    duplicate.merged_into = kept.id
    duplicate.updated_at = now
    tx.session.add(Merge(kept_id=kept.id, merged_id=duplicate.id, reason=reason, at=now))
    log_activity(tx, kept.id, "lead.merged", merged_id=duplicate.id, reason=reason)
    log_activity(tx, duplicate.id, "lead.merged_into", kept_id=kept.id, reason=reason)
    log.info("lead %s merged into %s (%s)", duplicate.id, kept.id, reason or "no reason given")
    # A merge emits no event, yet the duplicate leaves the stage gauges.
    tx.after_commit(ctx.metrics.refresh_soon)
    return kept

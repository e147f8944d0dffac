"""The batch cache the use cases share: loading leads (following merges), remembering what a
transaction read or captured, and the prefetch that reads a consumed batch's rows up front.

Everything remembered lives in one transaction's ``tx.memo`` only; whoever changes what a
memo holds keeps it current or drops it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, bindparam, func, literal_column, or_, select, union_all

from services.leads import domain
from services.leads.commands import LeadIn
from services.leads.store import IcpVersion, Lead
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.uow import UnitOfWork

# How many merges an event's lead is followed through (a merged lead's keeper may be merged too).
MERGE_HOPS = 5
# Per-transaction memo (tx.memo) keys.
_LEADS = "leads.by_id"
_ICP = "leads.icp"
_KNOWN = "leads.known"


# --------------------------------------------------------------------------- leads by id


async def load_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead | None:
    """``session.get``, minus its query (and the flush before it) for a lead the batch's prefetch
    read or found missing, or one captured in this transaction (pending until the commit)."""
    known: dict[uuid.UUID, Lead | None] = tx.memo.get(_LEADS, {})
    if lead_id in known:
        return known[lead_id]
    return await tx.session.get(Lead, lead_id)


async def get_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead:
    """The lead, merged or erased as it may be; ``NotFound`` when there is none."""
    lead = await load_lead(tx, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    return lead


async def live_lead(tx: UnitOfWork, lead_id: uuid.UUID) -> Lead:
    """A lead that can still be worked on: not erased, and the kept one when it was merged."""
    lead = await get_lead(tx, lead_id)
    if lead.merged_into is not None:
        lead = await get_lead(tx, lead.merged_into)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased; its personal data is gone")
    return lead


async def lead_for_event(tx: UnitOfWork, lead_id: uuid.UUID | None) -> Lead | None:
    """The lead an event from another service is about (following merges), or None when we
    never captured that person or they were erased: nothing to do then."""
    if lead_id is None:
        return None
    lead = await load_lead(tx, lead_id)
    for _ in range(MERGE_HOPS):
        if lead is None or lead.merged_into is None:
            break
        lead = await load_lead(tx, lead.merged_into)
    if lead is None or lead.erased_at is not None:
        return None
    return lead


# --------------------------------------------------------------------------- the ICP in force


class CurrentIcp(NamedTuple):
    """The ICP in force: its profile, its YAML text and its version."""

    profile: domain.IdealClientProfile
    document: str
    version: int


def remembered_icp(tx: UnitOfWork) -> CurrentIcp | None:
    """The ICP this transaction already read or set, if any."""
    return tx.memo.get(_ICP)


def remember_icp(tx: UnitOfWork, icp: CurrentIcp) -> None:
    """Keep ``icp`` as the one in force for the rest of this transaction."""
    tx.memo[_ICP] = icp


async def read_icp(tx: UnitOfWork) -> CurrentIcp | None:
    """The newest stored ICP, kept in the memo; None when none was ever stored."""
    row = await tx.session.scalar(select(IcpVersion).order_by(IcpVersion.id.desc()).limit(1))
    if row is None:
        return None
    icp = CurrentIcp(domain.parsed_icp(row.document), row.document, row.id)
    remember_icp(tx, icp)
    return icp


# --------------------------------------------------------------------------- dedupe candidates


class Colleague(NamedTuple):
    """One of a company's leads as dedupe compares them: its name in capture order. The lead
    itself is read only for the one whose name matches (a company of a hundred leads made
    fifty full leads per referral the largest cost of the consumer with 100x history)."""

    id: uuid.UUID
    name: str | None
    created_at: datetime


@dataclass
class KnownLeads:
    """What a batch's captures dedupe against, read by ``prefetch`` in a few queries and kept
    current by ``remember_captured``: the lead with each dedupe key and each email (None: none),
    and per company domain its first live leads in capture order. Only the values present are
    answered from here; any other is queried. Erasing or merging a lead drops it all."""

    by_key: dict[str, Lead | None]
    by_email: dict[str, Lead | None]
    by_company: dict[str, list[Colleague]]

    def captured(self, lead: Lead) -> None:
        if lead.email_key in self.by_key:
            self.by_key[lead.email_key] = lead
        if lead.email in self.by_email:
            self.by_email[lead.email] = lead
        if lead.company_domain in self.by_company:
            same = self.by_company[lead.company_domain]
            same.append(Colleague(lead.id, lead.name, lead.created_at))
            same.sort(key=_capture_order)
            del same[domain.COMPANY_CANDIDATES :]


def _capture_order(lead: Colleague) -> tuple[datetime, uuid.UUID]:
    return lead.created_at, lead.id


async def lead_with_key(tx: UnitOfWork, key: str) -> Lead | None:
    """The lead whose dedupe key (normalised email) is ``key``."""
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    return await _lead_where(tx, Lead.email_key, key, known.by_key if known else None)


async def lead_with_email(tx: UnitOfWork, email: str) -> Lead | None:
    """The lead whose email, as written, is ``email``."""
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    return await _lead_where(tx, Lead.email, email, known.by_email if known else None)


async def lead_with_key_or_email(tx: UnitOfWork, key: str, email: str) -> Lead | None:
    """The lead whose dedupe key is ``key``, else the one whose email is ``email``: one query
    for both when the batch's known leads cover neither (a capture's usual case)."""
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    if known is not None and (key in known.by_key or email in known.by_email):
        return await lead_with_key(tx, key) or await lead_with_email(tx, email)
    found = list(await tx.session.scalars(select(Lead).where(or_(Lead.email_key == key, Lead.email == email))))
    return next((lead for lead in found if lead.email_key == key), None) or next(
        (lead for lead in found if lead.email == email), None
    )


@functools.cache
def _candidates_query() -> Select[Any]:
    """``capture_candidates``' one query, built once (with its cache key) for every capture:
    building it was a visible share of a ``POST /leads``'s CPU. Which part found a row comes
    as literal columns (no parameter whose type PostgreSQL must guess); the rows are names and
    addresses, not leads (see ``Colleague``)."""
    by_address = select(Lead.id.label("id"), literal_column("1", Integer).label("src")).where(
        or_(Lead.email_key == bindparam("key"), Lead.email == bindparam("email"))
    )
    first = (
        select(Lead.id)
        .where(Lead.company_domain == bindparam("company"), Lead.merged_into.is_(None), Lead.erased_at.is_(None))
        .order_by(Lead.created_at, Lead.id)
        .limit(domain.COMPANY_CANDIDATES)
        .subquery()
    )
    found = union_all(by_address, select(first.c.id, literal_column("2", Integer))).subquery()
    return select(Lead.id, Lead.name, Lead.created_at, Lead.email_key, Lead.email, found.c.src).join(
        found, found.c.id == Lead.id
    )


async def capture_candidates(
    tx: UnitOfWork, key: str, email: str, company: str | None
) -> tuple[Lead | Colleague | None, list[Colleague] | None]:
    """What a capture dedupes against: ``lead_with_key_or_email``, and (None when not read
    here) ``company_leads`` of ``company``, both in one query when the batch's known leads cover
    none of them (an HTTP capture's case: it was two queries, with their flushes, per lead)."""
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    if company is None or (
        known is not None and (key in known.by_key or email in known.by_email or company in known.by_company)
    ):
        return await lead_with_key_or_email(tx, key, email), None
    params = {"key": key, "email": email, "company": company}
    rows = (await tx.session.execute(_candidates_query(), params)).all()
    addressed = [row for row in rows if row.src == 1]
    same = sorted(
        {r.id: Colleague(r.id, r.name, r.created_at) for r in rows if r.src == 2}.values(), key=_capture_order
    )
    by_address = next((r for r in addressed if r.email_key == key), None) or next(
        (r for r in addressed if r.email == email), None
    )
    return None if by_address is None else Colleague(by_address.id, by_address.name, by_address.created_at), same


async def _lead_where(tx: UnitOfWork, column: Any, value: str, known: dict[str, Lead | None] | None) -> Lead | None:
    """The lead whose (unique) ``column`` is ``value``: from ``known`` when it covers the value."""
    if known is not None and value in known:
        return known[value]
    return await tx.session.scalar(select(Lead).where(column == value))


async def company_leads(tx: UnitOfWork, company: str) -> Iterable[Colleague]:
    """The company's first ``COMPANY_CANDIDATES`` live leads, in capture order."""
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    if known is not None and company in known.by_company:
        return known.by_company[company]
    rows = await tx.session.execute(
        select(Lead.id, Lead.name, Lead.created_at)
        .where(Lead.company_domain == company, Lead.merged_into.is_(None), Lead.erased_at.is_(None))
        .order_by(Lead.created_at, Lead.id)
        .limit(domain.COMPANY_CANDIDATES)
    )
    return [Colleague(*row) for row in rows]


def remember_captured(tx: UnitOfWork, lead: Lead) -> None:
    """A new lead stays pending until the commit: later events of the batch find it here."""
    tx.memo.setdefault(_LEADS, {})[lead.id] = lead
    known: KnownLeads | None = tx.memo.get(_KNOWN)
    if known is not None:
        known.captured(lead)


def forget_dedupe_candidates(tx: UnitOfWork) -> None:
    """After an erasure or a merge: emails, names and which leads are live have changed."""
    tx.memo.pop(_KNOWN, None)


# --------------------------------------------------------------------------- prefetch


async def prefetch(tx: UnitOfWork, events: list[ev.Envelope]) -> None:
    """Read up front, in a few queries, what a batch's events would each query (with a flush of
    everything pending before every query): their leads and the leads those were merged into,
    ids with no lead (so a miss costs nothing), and for referrals the ICP and the leads their
    captures dedupe against. Everything here lives in this transaction only."""
    await _load_leads(tx, {e.lead_id for e in events if e.lead_id is not None})
    referred: list[LeadIn] = []
    for event in events:
        if event.type != "referral.made":
            continue
        try:
            payload = event.payload()
            if isinstance(payload, ev.ReferralMade):
                referred.append(LeadIn.from_referral(payload, referred_by=None))
        except ValueError:
            continue  # the use case rejects it
    if referred:
        await read_icp(tx)  # a fresh database's seed version is still written by the first capture
        known = await _known_leads(tx, [person.email for person in referred])
        tx.memo[_KNOWN] = known
        found = [lead for lead in (*known.by_key.values(), *known.by_email.values()) if lead is not None]
        # The colleagues whose name a referral's matches: the leads those captures touch again.
        same = (
            domain.same_person(person.name, known.by_company.get(domain.company_domain(person.email) or "", ()))
            for person in referred
        )
        await _load_leads(
            tx, {lead.merged_into for lead in found if lead.merged_into is not None} | {c.id for c in same if c}
        )


def _chunks(values: set[Any], size: int = 500) -> list[list[Any]]:
    ordered = sorted(values)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


async def _load_leads(tx: UnitOfWork, ids: set[uuid.UUID]) -> None:
    """Load these leads and, hop by hop, the leads they were merged into (as ``lead_for_event``
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


async def _known_leads(tx: UnitOfWork, emails: list[str]) -> KnownLeads:
    """The leads captures from these (validated) emails could be duplicates of, as
    ``capture.find_duplicate`` would query them."""
    known = KnownLeads(
        by_key=dict.fromkeys(domain.normalise_email(e) for e in emails),
        by_email=dict.fromkeys(emails),
        by_company={company: [] for e in emails if (company := domain.company_domain(e)) is not None},
    )
    for start in range(0, len(emails), 500):
        part = emails[start : start + 500]
        keys, addresses = {domain.normalise_email(e) for e in part}, set(part)
        by_address = select(Lead).where(or_(Lead.email_key.in_(sorted(keys)), Lead.email.in_(sorted(addresses))))
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
        first = (
            select(Lead.id, Lead.name, Lead.created_at, Lead.company_domain)
            .join(ranked, ranked.c.id == Lead.id)
            .where(ranked.c.n <= domain.COMPANY_CANDIDATES)
        )
        for lead_id, name, created_at, company in await tx.session.execute(first):
            if company is not None:
                known.by_company[company].append(Colleague(lead_id, name, created_at))
    for same in known.by_company.values():
        same.sort(key=_capture_order)
    return known

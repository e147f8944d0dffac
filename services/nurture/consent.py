"""Consent kept honest (the rules: domain/consent.py): every grant, request and withdrawal of
a person's marketing consent is recorded with its time, source and wording version; after an
unsubscribe or a bounce, a form that ticks the box again is a request confirmed by the person
through a signed link e-mailed to them (``consent_confirm``, transactional: it goes without
marketing consent), and marketing comes back only then.

The history holds no name or address (the id, when, from where, which wording): it is the
proof of consent and stays after an erasure, which removes everything that names the person."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from services.nurture import domain
from services.nurture.domain import consent as rules
from services.nurture.record import known_contact
from services.nurture.store import ConsentRecord, Contact, Enrollment, ScheduledMessage
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

SEQUENCE = TEMPLATE = "consent_confirm"
# A form submitted again and again sends one confirmation while the last one is this fresh.
RESEND_AFTER_HOURS = 24


@dataclass(frozen=True)
class Prior:
    """The person's consent before an event was applied."""

    known: bool
    consent: bool
    withdrawn: bool


async def prior(tx: UnitOfWork, lead_id: uuid.UUID | None) -> Prior:
    """What nurture knew of the person's consent before this event."""
    contact = await known_contact(tx, lead_id) if lead_id is not None else None
    if contact is None or contact.email is None:
        return Prior(known=False, consent=False, withdrawn=False)
    return Prior(
        known=True,
        consent=contact.consent_marketing,
        withdrawn=contact.unsubscribed_at is not None or contact.bounced_at is not None,
    )


def record(
    tx: UnitOfWork, lead_id: uuid.UUID, *, kind: rules.ConsentKind, source: str, wording: str | None
) -> ConsentRecord:
    """Keep one grant, request or withdrawal in the person's history."""
    row = ConsentRecord(id=time_ordered_id(), lead_id=lead_id, kind=kind, source=source, wording=wording, at=tx.now())
    tx.session.add(row)
    return row


async def after_capture(
    tx: UnitOfWork,
    *,
    event: ev.Envelope,
    payload: ev.LeadCaptured,
    before: Prior,
    default_wording: str,
    confirm_url: Callable[[uuid.UUID], str],
    on_scheduled: Callable[[], None] | None = None,
) -> rules.CaptureOutcome:
    """A capture (or a known person's new touch) that ticked the box: a grant for someone who
    never withdrew consent, else a request and the confirmation e-mail."""
    if event.lead_id is None:
        return "none"
    contact = await known_contact(tx, event.lead_id)
    if contact is None or contact.erased_at is not None:
        return "none"
    outcome = rules.on_capture(ticked=payload.consent_marketing, consent_now=before.consent, withdrawn=before.withdrawn)
    source = payload.capture_source or "form"
    wording = payload.consent_wording or default_wording
    if outcome == "grant":
        record(tx, contact.lead_id, kind="grant", source=source, wording=wording)
    elif outcome == "request":
        await request_confirmation(
            tx, contact, source=source, wording=wording, confirm_url=confirm_url, on_scheduled=on_scheduled
        )
    return outcome


async def request_confirmation(
    tx: UnitOfWork,
    contact: Contact,
    *,
    source: str,
    wording: str,
    confirm_url: Callable[[uuid.UUID], str],
    on_scheduled: Callable[[], None] | None = None,
) -> ConsentRecord:
    """Record a consent request and e-mail the signed confirmation link (once a day at most
    while one is open: a form posted again and again sends no flood)."""
    now = tx.now()
    open_request = await tx.session.scalar(
        select(ConsentRecord)
        .where(
            ConsentRecord.lead_id == contact.lead_id,
            ConsentRecord.kind == "request",
            ConsentRecord.confirmed_at.is_(None),
        )
        .order_by(ConsentRecord.at.desc())
        .limit(1)
    )
    row = record(tx, contact.lead_id, kind="request", source=source, wording=wording)
    if open_request is not None and (now - open_request.at).total_seconds() < RESEND_AFTER_HOURS * 3600:
        return row
    enrollment = Enrollment(
        id=time_ordered_id(),
        lead_id=contact.lead_id,
        sequence=SEQUENCE,
        status="active",
        enrolled_at=now,
        key=str(row.id),
        context={"confirm_url": confirm_url(row.id), "wording": wording},
    )
    tx.session.add(enrollment)
    tx.session.add(
        ScheduledMessage(
            id=time_ordered_id(),
            lead_id=contact.lead_id,
            sequence=SEQUENCE,
            step=1,
            template=TEMPLATE,
            category="transactional",
            due_at=now,
            status=domain.PENDING,
            enrollment_id=enrollment.id,
            immediate=True,
            variables={},
            attempts=0,
        )
    )
    if on_scheduled is not None:
        tx.after_commit(on_scheduled)
    return row


async def open_request(tx: UnitOfWork, request_id: uuid.UUID) -> tuple[ConsentRecord, Contact]:
    """The request a confirmation link names, with its person (404 when unknown or erased)."""
    row = await tx.session.get(ConsentRecord, request_id)
    if row is None or row.kind != "request":
        raise NotFound("no such link")
    contact = await known_contact(tx, row.lead_id)
    if contact is None or contact.erased_at is not None:
        raise NotFound("no such link")
    return row, contact


async def confirm(tx: UnitOfWork, request_id: uuid.UUID) -> ConsentRecord:
    """The person confirmed through the link: marketing consent is back (a grant from the
    confirmation link, with the request's wording). A second confirmation changes nothing."""
    row, contact = await open_request(tx, request_id)
    if row.confirmed_at is not None:
        return row
    now = tx.now()
    row.confirmed_at = now
    if not contact.consent_marketing:
        contact.consent_marketing = True
        contact.updated_at = now
        record(tx, contact.lead_id, kind="grant", source="confirmation_link", wording=row.wording)
    return row


async def staff_grant(tx: UnitOfWork, lead_id: uuid.UUID, *, wording: str) -> ConsentRecord:
    """Staff record consent the person gave them (a call, a signed form): marketing may go
    again, recorded as a grant from ``staff`` (the audit trail names who). 404 for an unknown
    person, 409 for an erased one or an address that bounced (no mail can reach it)."""
    contact = await known_contact(tx, lead_id)
    if contact is None or contact.email is None:
        raise NotFound(f"no person {lead_id}")
    if contact.erased_at is not None:
        raise Conflict(f"person {lead_id} was erased")
    if contact.bounced_at is not None:
        raise Conflict(f"consent: the address of person {lead_id} bounced; no e-mail can reach it")
    contact.consent_marketing = True
    contact.updated_at = tx.now()
    return record(tx, lead_id, kind="grant", source="staff", wording=wording)


def withdrawn(tx: UnitOfWork, lead_id: uuid.UUID, *, source: str) -> None:
    """The person withdrew consent (the unsubscribe link): kept in the history."""
    record(tx, lead_id, kind="withdrawal", source=source, wording=None)


async def history(tx: UnitOfWork, lead_id: uuid.UUID) -> tuple[Contact, list[ConsentRecord]]:
    """The person's consent now and every grant, request and withdrawal, oldest first."""
    contact = await known_contact(tx, lead_id)
    if contact is None:
        raise NotFound(f"no person {lead_id}")
    if contact.erased_at is not None:
        raise Conflict(f"person {lead_id} was erased")
    rows = await tx.session.scalars(
        select(ConsentRecord).where(ConsentRecord.lead_id == lead_id).order_by(ConsentRecord.at, ConsentRecord.id)
    )
    return contact, list(rows)

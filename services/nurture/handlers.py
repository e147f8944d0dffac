"""Nurture's use cases: one async function per thing that can happen."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, or_, select, update

from services.nurture import domain
from services.nurture.store import Contact, Enrollment, Message, ScheduledMessage, Takeover
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.uow import UnitOfWork

S = ScheduledMessage


# --------------------------------------------------------------------------- contacts and enrollment


async def enroll_captured_lead(
    tx: UnitOfWork,
    *,
    catalog: domain.Catalog,
    lead_id: uuid.UUID,
    data: ev.LeadCaptured,
    on_scheduled: Callable[[], None] | None = None,
) -> list[ScheduledMessage]:
    """Keep the contact and enroll a new lead in the sequences ``lead.captured`` starts for its
    segment, every step a durable row in this same transaction. A duplicate touch only updates
    consent; an erased person stays erased."""
    now = tx.now()
    contact = await tx.session.get(Contact, lead_id)
    if contact is not None and contact.erased_at is not None:
        return []
    if contact is None:
        contact = Contact(
            lead_id=lead_id,
            name=data.name,
            email=data.email,
            language=data.language,
            timezone=data.timezone,
            segment=data.segment,
            consent_marketing=data.consent_marketing,
            created_at=now,
            updated_at=now,
        )
        tx.session.add(contact)
    else:
        contact.consent_marketing = domain.merged_consent(contact.consent_marketing, data.consent_marketing)
        contact.updated_at = now
    if data.duplicate:
        return []
    scheduled: list[ScheduledMessage] = []
    for sequence in catalog.triggered_by("lead.captured", segment=data.segment):
        scheduled += await enroll(tx, sequence=sequence, lead_id=lead_id, at=now)
    if scheduled and on_scheduled is not None:
        tx.after_commit(on_scheduled)
    return scheduled


async def enroll(
    tx: UnitOfWork, *, sequence: domain.Sequence, lead_id: uuid.UUID, at: datetime
) -> list[ScheduledMessage]:
    """Enroll a person in a sequence once (a second enrollment is a no-op) and schedule its steps."""
    exists = await tx.session.scalar(
        select(Enrollment.id).where(Enrollment.lead_id == lead_id, Enrollment.sequence == sequence.name)
    )
    if exists is not None:
        return []
    tx.session.add(
        Enrollment(id=uuid.uuid4(), lead_id=lead_id, sequence=sequence.name, status="active", enrolled_at=at)
    )
    rows = [
        ScheduledMessage(
            id=uuid.uuid4(),
            lead_id=lead_id,
            sequence=sequence.name,
            step=step.number,
            template=step.template,
            category=step.category,
            due_at=due_at,
            status=domain.PENDING,
        )
        for step, due_at in sequence.schedule(at)
    ]
    tx.session.add_all(rows)
    return rows


async def end_enrollments(
    tx: UnitOfWork, *, catalog: domain.Catalog, lead_id: uuid.UUID | None, event_type: str
) -> None:
    """An exit event (``exit_on`` of a sequence) ends the person's enrollment in it and cancels
    the steps not yet sent."""
    if lead_id is None:
        return
    now = tx.now()
    for sequence in catalog.ended_by(event_type):
        await tx.session.execute(
            update(Enrollment)
            .where(Enrollment.lead_id == lead_id, Enrollment.sequence == sequence.name, Enrollment.status == "active")
            .values(status="exited", ended_at=now, ended_reason=event_type)
        )
        await tx.session.execute(
            update(S)
            .where(S.lead_id == lead_id, S.sequence == sequence.name, S.status == domain.PENDING)
            .values(status=domain.CANCELLED, reason=event_type, claimed_until=None)
        )


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """Forget a person's name and address everywhere in nurture; counts and dates stay,
    anonymous, and nothing more is sent."""
    now = tx.now()
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        # Keep a tombstone so a late lead.captured cannot bring the person back.
        tx.session.add(Contact(lead_id=lead_id, erased_at=now, created_at=now, updated_at=now))
    else:
        contact.name = None
        contact.email = None
        contact.erased_at = contact.erased_at or now
        contact.updated_at = now
    # Subjects and bodies are personalised (first name), so they go too.
    await tx.session.execute(
        update(Message).where(Message.lead_id == lead_id).values(to_address=None, subject=None, body_text=None)
    )
    await tx.session.execute(
        update(S)
        .where(S.lead_id == lead_id, S.status == domain.PENDING)
        .values(status=domain.CANCELLED, reason="erased", claimed_until=None)
    )
    await tx.session.execute(
        update(Enrollment)
        .where(Enrollment.lead_id == lead_id, Enrollment.status == "active")
        .values(status="cancelled", ended_at=now, ended_reason="lead.erased")
    )
    # A note a human wrote about the person may name them.
    await tx.session.execute(update(Takeover).where(Takeover.lead_id == lead_id).values(reason=None))


async def get_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact:
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        raise NotFound(f"no lead {lead_id} in nurture")
    return contact


async def list_messages(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Message]:
    """Messages sent to a person, oldest first."""
    await get_contact(tx, lead_id)
    rows = await tx.session.scalars(
        select(Message).where(Message.lead_id == lead_id).order_by(Message.sent_at, Message.step, Message.message_id)
    )
    return list(rows)


# --------------------------------------------------------------------------- human takeover


async def active_takeover(tx: UnitOfWork, lead_id: uuid.UUID) -> Takeover | None:
    return await tx.session.scalar(select(Takeover).where(Takeover.lead_id == lead_id, Takeover.ended_at.is_(None)))


async def start_takeover(tx: UnitOfWork, lead_id: uuid.UUID, *, by: str, reason: str | None) -> Takeover:
    """A human takes a person over (``takeover.started``): their automated emails are held."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is not None:
        raise Conflict(f"lead {lead_id} is already taken over by {current.by} since {current.started_at.isoformat()}")
    takeover = Takeover(id=uuid.uuid4(), lead_id=lead_id, by=by, reason=reason, started_at=tx.now())
    tx.session.add(takeover)
    tx.emit("takeover.started", ev.TakeoverStarted(by=by, reason=reason), lead_id=lead_id)
    return takeover


async def end_takeover(tx: UnitOfWork, lead_id: uuid.UUID, *, by: str | None) -> Takeover:
    """The human hands the person back (``takeover.ended``): held steps go out."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is None:
        raise Conflict(f"lead {lead_id} is not taken over")
    current.ended_at = tx.now()
    current.ended_by = by
    tx.emit("takeover.ended", ev.TakeoverEnded(by=by), lead_id=lead_id)
    return current


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Outgoing:
    """A claimed step with what is needed to write it, read in the claiming transaction."""

    id: uuid.UUID
    lead_id: uuid.UUID
    sequence: str
    step: int
    template: str
    category: str
    name: str | None
    email: str | None
    language: str
    consent_marketing: bool
    erased: bool


async def claim_due_steps(tx: UnitOfWork, *, now: datetime, limit: int, lease: timedelta) -> list[Outgoing]:
    """Claim up to ``limit`` due steps for ``lease`` so no other sender takes them meanwhile.

    The claim is a conditional update, so two instances never both win one row (on SQLite the
    write lock serialises them, on PostgreSQL the second update re-reads the claimed row)."""
    held = set(await tx.session.scalars(select(Takeover.lead_id).where(Takeover.ended_at.is_(None))))
    unclaimed = or_(S.claimed_until.is_(None), S.claimed_until <= now)
    query = select(S.id, S.lead_id, S.due_at).where(S.status == domain.PENDING, S.due_at <= now, unclaimed)
    if held:
        # Held people are left out here too, or their old steps would fill every batch.
        query = query.where(S.lead_id.not_in(held))
    rows = (await tx.session.execute(query.order_by(S.due_at, S.id).limit(limit))).all()
    due = domain.select_due(
        [domain.PendingStep(id=r.id, lead_id=r.lead_id, due_at=r.due_at) for r in rows], now=now, held=held, limit=limit
    )
    claimed: list[uuid.UUID] = []
    for step in due:
        result = await tx.session.execute(
            update(S)
            .where(S.id == step.id, S.status == domain.PENDING, unclaimed)
            .values(claimed_until=now + lease, attempts=S.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            claimed.append(step.id)
    if not claimed:
        return []
    found = await tx.session.execute(
        select(S, Contact).join(Contact, Contact.lead_id == S.lead_id, isouter=True).where(S.id.in_(claimed))
    )
    by_id = {
        row.id: Outgoing(
            id=row.id,
            lead_id=row.lead_id,
            sequence=row.sequence,
            step=row.step,
            template=row.template,
            category=row.category,
            name=contact.name if contact else None,
            email=contact.email if contact else None,
            language=contact.language if contact else "en",
            consent_marketing=bool(contact and contact.consent_marketing),
            erased=contact is None or contact.erased_at is not None,
        )
        for row, contact in found.all()
    }
    return [by_id[i] for i in claimed if i in by_id]


async def _finish_if_done(tx: UnitOfWork, lead_id: uuid.UUID, sequence: str) -> None:
    left = await tx.session.scalar(
        select(func.count())
        .select_from(S)
        .where(S.lead_id == lead_id, S.sequence == sequence, S.status == domain.PENDING)
    )
    if not left:
        await tx.session.execute(
            update(Enrollment)
            .where(Enrollment.lead_id == lead_id, Enrollment.sequence == sequence, Enrollment.status == "active")
            .values(status="completed", ended_at=tx.now(), ended_reason="all steps done")
        )


async def suppress_step(tx: UnitOfWork, step: Outgoing, *, reason: str) -> bool:
    """A step that may not go (no consent, no address) is closed without an email or event."""
    result = await tx.session.execute(
        update(S)
        .where(S.id == step.id, S.status == domain.PENDING)
        .values(status=domain.SUPPRESSED, reason=reason, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await _finish_if_done(tx, step.lead_id, step.sequence)
    return True


async def record_sent(
    tx: UnitOfWork, step: Outgoing, *, subject: str, body_text: str, language: str, to_address: str
) -> bool:
    """The transport accepted the email: mark the step sent, keep the message, say ``email.sent``.

    False when the step is no longer pending (erased or exited while the email was on its way,
    or sent by another instance after our claim expired): nothing is recorded then."""
    now = tx.now()
    result = await tx.session.execute(
        update(S)
        .where(S.id == step.id, S.status == domain.PENDING)
        .values(status=domain.SENT, sent_at=now, claimed_until=None, reason=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    tx.session.add(
        Message(
            message_id=step.id,
            lead_id=step.lead_id,
            sequence=step.sequence,
            step=step.step,
            template=step.template,
            language=language,
            subject=subject,
            category=step.category,
            to_address=to_address,
            sent_at=now,
            body_text=body_text,
        )
    )
    tx.emit(
        "email.sent",
        ev.EmailSent(
            message_id=step.id,
            sequence=step.sequence,
            step=step.step,
            template=step.template,
            subject=subject,
            category=step.category,  # type: ignore[arg-type]
        ),
        lead_id=step.lead_id,
    )
    await _finish_if_done(tx, step.lead_id, step.sequence)
    return True


async def record_failure(tx: UnitOfWork, step: Outgoing, *, error: str) -> None:
    """The transport refused: the step stays pending and claimed, so it is retried when the
    claim lapses rather than at once in a tight loop."""
    await tx.session.execute(
        update(S).where(S.id == step.id).values(last_error=error[:2000]).execution_options(synchronize_session=False)
    )


async def queue_depth(tx: UnitOfWork, *, now: datetime) -> int:
    """Pending steps already due (held ones included: they are waiting too)."""
    count = await tx.session.scalar(
        select(func.count()).select_from(S).where(S.status == domain.PENDING, S.due_at <= now)
    )
    return count or 0

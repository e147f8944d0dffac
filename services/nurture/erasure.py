"""Erasure: a person's name, address and words go from everything nurture keeps (``lead.erased``);
counts and dates stay, anonymous, and nothing more is sent to them."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import func, select, update

from services.nurture import domain
from services.nurture.enrollment import end_each
from services.nurture.record import active_enrollments, add_contact, known_contact
from services.nurture.store import Contact, Enrollment, Feedback, Message, Reply, ScheduledMessage, Takeover, Task
from shared.privacy import forget_person
from shared.uow import UnitOfWork

S = ScheduledMessage


async def erase_person(
    tx: UnitOfWork, lead_id: uuid.UUID | None, *, on_erased: Callable[[list[uuid.UUID]], None] | None = None
) -> list[uuid.UUID]:
    """The person asked to be forgotten (``lead.erased``). ``on_erased`` gets the ids of the
    messages sent to them once the erasure committed (the mail store forgets them)."""
    if lead_id is None:
        return []
    sent = await erase_contact(tx, lead_id)
    if on_erased is not None and sent:
        tx.after_commit(lambda: on_erased(sent))
    return sent


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> list[uuid.UUID]:
    """Forget a person's name, address and words everywhere in nurture; counts and dates stay,
    anonymous, and nothing more is sent. Returns the ids of the messages sent to them."""
    now = tx.now()
    contact = await known_contact(tx, lead_id)
    address = contact.email if contact is not None else None
    if contact is None:
        # Keep a tombstone so a late lead.captured cannot bring the person back.
        add_contact(tx, Contact(lead_id=lead_id, erased_at=now, created_at=now, updated_at=now, engagement_score=0))
    else:
        contact.name = None
        contact.email = None
        contact.industry = None
        contact.erased_at = contact.erased_at or now
        contact.updated_at = now
    # Subjects and bodies are personalised (first name), so they go too.
    await tx.session.execute(
        update(Message).where(Message.lead_id == lead_id).values(to_address=None, subject=None, body_text=None)
    )
    await end_each(tx, await active_enrollments(tx, lead_id), reason="erased", status="cancelled")
    await tx.session.execute(
        update(S)
        .where(S.lead_id == lead_id, S.status == domain.PENDING)
        .values(status=domain.CANCELLED, reason="erased", claimed_until=None)
    )
    await tx.session.execute(update(Enrollment).where(Enrollment.lead_id == lead_id).values(context=None))
    await tx.session.execute(update(S).where(S.lead_id == lead_id).values(variables=None))
    # What a human or the person wrote may name them.
    await tx.session.execute(update(Takeover).where(Takeover.lead_id == lead_id).values(reason=None))
    await tx.session.execute(
        update(Reply).where(Reply.lead_id == lead_id).values(from_address=None, subject=None, text=None)
    )
    if address:
        # E-mails from their address that no thread matched are theirs too.
        await tx.session.execute(
            update(Reply)
            .where(Reply.lead_id.is_(None), func.lower(Reply.from_address) == address.lower())
            .values(from_address=None, subject=None, text=None)
        )
    await tx.session.execute(update(Feedback).where(Feedback.lead_id == lead_id).values(comment=None))
    await tx.session.execute(update(Task).where(Task.lead_id == lead_id).values(detail=None))
    for task in await tx.session.scalars(select(Task).where(Task.lead_id == lead_id)):
        task.title = f"{task.kind} (the person was erased)"  # titles name the person
    await forget_person(tx, lead_id)
    return list(await tx.session.scalars(select(Message.message_id).where(Message.lead_id == lead_id)))

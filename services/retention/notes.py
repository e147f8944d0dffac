"""Notes on a client: what staff saw, in words, with tags from a fixed list
(``domain.tiers.NOTE_TAGS``). The text is personal data: it is never published (no event
carries it) and it goes with the person on erasure (``lead.erased``). The tags count at the
tier review: ``mistreats_staff`` or ``blames_us`` on two notes within 90 days make the client a
let-go candidate (``domain.tiers.let_go_from_notes``).

A replay (``clientflow replay retention``) cannot read notes back from the topics: it copies
them from the store it rebuilds (``replay.copy_notes``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from services.retention import record
from services.retention.domain.tiers import LET_GO_WINDOW_DAYS, NOTE_TAGS
from services.retention.store import ClientNote
from shared.access.context import CURRENT_ACTOR
from shared.errors import Conflict, Invalid
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

MAX_TEXT = 5000


async def add_note(tx: UnitOfWork, lead_id: uuid.UUID, *, text: str, tags: Sequence[str]) -> ClientNote:
    """Keep a note on a client (404 for an unknown one, 409 for an erased one)."""
    client = await record.get_client(tx, lead_id)
    if client.erased_at is not None:
        raise Conflict(f"client {lead_id} was erased: no notes are kept on them")
    if not text or len(text) > MAX_TEXT:
        raise Invalid(f"text: 1 to {MAX_TEXT} characters")
    for i, tag in enumerate(tags):
        if tag not in NOTE_TAGS:
            raise Invalid(f"tags[{i}]: unknown tag {tag!r}; known: {', '.join(NOTE_TAGS)}")
    actor = CURRENT_ACTOR.get()
    note = ClientNote(
        id=time_ordered_id(),
        lead_id=lead_id,
        text=text,
        tags=sorted(set(tags), key=NOTE_TAGS.index),
        author_id=actor.id if actor is not None else None,
        created_at=tx.now(),
    )
    tx.session.add(note)
    return note


async def notes_of(tx: UnitOfWork, lead_id: uuid.UUID) -> list[ClientNote]:
    """The client's notes, newest first (404 for an unknown client)."""
    await record.get_client(tx, lead_id)
    rows = await tx.session.scalars(
        select(ClientNote).where(ClientNote.lead_id == lead_id).order_by(ClientNote.created_at.desc(), ClientNote.id)
    )
    return list(rows)


async def recent_tags(tx: UnitOfWork, lead_id: uuid.UUID, now: datetime) -> list[tuple[datetime, list[str]]]:
    """(when, tags) of the client's tagged notes of the let-go window: what the review counts."""
    rows = await tx.session.execute(
        select(ClientNote.created_at, ClientNote.tags).where(
            ClientNote.lead_id == lead_id, ClientNote.created_at >= now - timedelta(days=LET_GO_WINDOW_DAYS)
        )
    )
    return [(at, list(tags or [])) for at, tags in rows]


async def erase_notes(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """An erased person: their notes go (the text may say anything about them)."""
    await tx.session.execute(delete(ClientNote).where(ClientNote.lead_id == lead_id))

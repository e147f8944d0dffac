"""The batch cache the use cases share: what one transaction knows of each person it read (their
contact and every enrollment), filled for a whole consumed batch by ``prefetch``, else on first
use, and the row loading that goes with it."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, event, insert, select
from sqlalchemy.orm import Session

from services.nurture import domain
from services.nurture.catalog import current_catalog
from services.nurture.store import Contact, Enrollment, ScheduledMessage
from shared import events as ev
from shared.errors import NotFound
from shared.uow import UnitOfWork

# Per transaction (``tx.memo``): what is known of each person read (a Contact, or None when they
# have none), and every enrollment of each person read, with those added since. A person created
# in the transaction is pending, which the session's identity map does not hold, so a second
# ``session.get`` would flush and query again.
_CONTACTS = "nurture.contacts"
_ENROLLMENTS = "nurture.enrollments"
# Ids per ``IN (...)``: well under every database's limit on bound parameters.
CHUNK = 500


def chunks(ids: list[uuid.UUID]) -> list[list[uuid.UUID]]:
    """``ids`` in slices of ``CHUNK``, one query each."""
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]


async def prefetch(tx: UnitOfWork, events: list[ev.Envelope], *, builtin: domain.Catalog) -> None:
    """Read what a consumed batch's events will read of their people (contacts, enrollments) and
    the catalog in a few queries, so the use cases query nothing per event and their inserts wait
    for the commit instead of being flushed one event at a time by each query."""
    lead_ids = list(dict.fromkeys(e.lead_id for e in events if e.lead_id is not None))
    contacts: dict[uuid.UUID, Contact | None] = tx.memo.setdefault(_CONTACTS, {})
    for chunk in chunks([i for i in lead_ids if i not in contacts]):
        found = {c.lead_id: c for c in await tx.session.scalars(select(Contact).where(Contact.lead_id.in_(chunk)))}
        contacts.update((i, found.get(i)) for i in chunk)
    enrollments: dict[uuid.UUID, list[Enrollment]] = tx.memo.setdefault(_ENROLLMENTS, {})
    for chunk in chunks([i for i in lead_ids if i not in enrollments]):
        lists: dict[uuid.UUID, list[Enrollment]] = {i: [] for i in chunk}
        for enrollment in await tx.session.scalars(select(Enrollment).where(Enrollment.lead_id.in_(chunk))):
            lists[enrollment.lead_id].append(enrollment)
        enrollments.update(lists)
    await current_catalog(tx, builtin)


async def known_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact | None:
    """The person as nurture knows them, or None; read once per transaction."""
    known: dict[uuid.UUID, Contact | None] = tx.memo.setdefault(_CONTACTS, {})
    if lead_id not in known:
        known[lead_id] = await tx.session.get(Contact, lead_id)
    return known[lead_id]


def add_contact(tx: UnitOfWork, contact: Contact) -> Contact:
    """A new person, remembered for the rest of the transaction."""
    tx.session.add(contact)
    tx.memo.setdefault(_CONTACTS, {})[contact.lead_id] = contact
    return contact


async def contact_for_event(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact:
    """The person, or a placeholder (no address yet) for an event that came before the capture."""
    contact = await known_contact(tx, lead_id)
    if contact is None:
        now = tx.now()
        contact = add_contact(
            tx,
            Contact(
                lead_id=lead_id,
                language="en",
                timezone="UTC",
                segment="default",
                consent_marketing=False,
                engagement_score=0,
                created_at=now,
                updated_at=now,
            ),
        )
    return contact


async def get_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact:
    """The person (404 when nurture has never heard of them)."""
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        raise NotFound(f"no lead {lead_id} in nurture")
    return contact


async def enrollments_of(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Enrollment]:
    """Every enrollment of the person (any status), read once per transaction; ``enroll`` adds
    the new ones to this list."""
    known: dict[uuid.UUID, list[Enrollment]] = tx.memo.setdefault(_ENROLLMENTS, {})
    if lead_id not in known:
        known[lead_id] = list(await tx.session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)))
    return known[lead_id]


async def active_enrollments(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Enrollment]:
    """The person's enrollments still running."""
    return [e for e in await enrollments_of(tx, lead_id) if e.status == "active"]


# Scheduled steps are only ever inserted where they are created: built as ORM objects they were
# a third of a consumed batch (constructing, cascading and flushing two or more a person). They
# wait in the session and go in one executemany at its next flush, which is where the ORM would
# have inserted them too: before any query (autoflush), a savepoint, or the commit. A new step
# always comes with its new Enrollment, pending in the same session, so that flush does happen.
_STEPS = "nurture.new_steps"


def add_steps(tx: UnitOfWork, rows: list[dict[str, Any]]) -> None:
    """Insert these ``scheduled_messages`` rows (each with every column ``enroll`` sets) at the
    session's next flush, in the same transaction, like pending ORM objects."""
    session = tx.session.sync_session
    waiting: list[dict[str, Any]] | None = session.info.get(_STEPS)
    if waiting is None:
        waiting = session.info[_STEPS] = []
        event.listen(session, "before_flush", _insert_steps)
        # Rolled back before they were flushed (a savepoint flushes when it begins, so all of
        # them are its own): gone, as the pending Enrollment they came with is.
        event.listen(session, "after_soft_rollback", _drop_steps)
    waiting.extend(rows)


def _insert_steps(session: Session, _context: Any, _instances: Any) -> None:
    waiting: list[dict[str, Any]] = session.info.get(_STEPS, [])
    if waiting:
        rows = list(waiting)
        waiting.clear()
        session.connection().execute(insert(cast("Table", ScheduledMessage.__table__)), rows)


def _drop_steps(session: Session, _previous: Any) -> None:
    session.info.get(_STEPS, []).clear()

"""Human takeover: while a person handles someone (a reply, a meeting, a founder's note), every
automated email to them waits; released, the held steps go out."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from services.nurture import domain
from services.nurture.catalog import current_catalog
from services.nurture.enrollment import end_enrollments
from services.nurture.record import get_contact
from services.nurture.store import Takeover
from shared import events as ev
from shared.errors import Conflict
from shared.uow import UnitOfWork


async def active_takeover(tx: UnitOfWork, lead_id: uuid.UUID) -> Takeover | None:
    """The person's takeover still open, if any."""
    return await tx.session.scalar(select(Takeover).where(Takeover.lead_id == lead_id, Takeover.ended_at.is_(None)))


async def start_takeover(
    tx: UnitOfWork, *, lead_id: uuid.UUID, by: str, reason: str | None, builtin: domain.Catalog
) -> Takeover:
    """A human takes a person over (``takeover.started``): every automated email to them is held;
    sequences that list ``takeover`` among their exits end (409 when one is already open)."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is not None:
        raise Conflict(f"lead {lead_id} is already taken over by {current.by} since {current.started_at.isoformat()}")
    takeover = Takeover(id=uuid.uuid4(), lead_id=lead_id, by=by, reason=reason, started_at=tx.now())
    tx.session.add(takeover)
    tx.emit("takeover.started", ev.TakeoverStarted(by=by, reason=reason), lead_id=lead_id)
    catalog = await current_catalog(tx, builtin)
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type="takeover.started")
    return takeover


async def end_takeover(tx: UnitOfWork, *, lead_id: uuid.UUID, by: str | None) -> Takeover:
    """The human hands the person back (``takeover.ended``): held steps go out (409 when no
    takeover is open)."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is None:
        raise Conflict(f"lead {lead_id} is not taken over")
    current.ended_at = tx.now()
    current.ended_by = by
    tx.emit("takeover.ended", ev.TakeoverEnded(by=by), lead_id=lead_id)
    return current

"""Human takeover: while a person handles someone (a reply, a meeting, a founder's note), every
automated email to them waits; released, the held steps go out.

A takeover an inbound reply started ends by itself after ``NURTURE_TAKEOVER_REPLY_DAYS``
business days unless a person extends it, and its owner is told a business day before; one a
person started lasts until they end it, and its owner is reminded every week it stays open
(docs/design.md, "Business rules"). The scheduled pass that does both isolates each takeover:
one that fails is kept aside with its reason (job ``nurture.takeovers``), the others go on."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select

from services.nurture import domain
from services.nurture.catalog import current_catalog
from services.nurture.enrollment import end_enrollments
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import get_contact, known_contact
from services.nurture.store import Takeover, Task
from services.nurture.tasks import add_task
from shared import events as ev
from shared.errors import Conflict
from shared.ids import time_ordered_id
from shared.jobs import Jobs
from shared.uow import UnitOfWork, UnitOfWorkFactory

JOB = "nurture.takeovers"
PAGE = 200


async def active_takeover(tx: UnitOfWork, lead_id: uuid.UUID) -> Takeover | None:
    """The person's takeover still open, if any."""
    return await tx.session.scalar(select(Takeover).where(Takeover.lead_id == lead_id, Takeover.ended_at.is_(None)))


async def latest_takeover(tx: UnitOfWork, lead_id: uuid.UUID) -> Takeover | None:
    """The person's takeover open now or, when none is, the last one that ended."""
    return await tx.session.scalar(
        select(Takeover)
        .where(Takeover.lead_id == lead_id)
        .order_by(Takeover.ended_at.is_not(None), Takeover.started_at.desc())
        .limit(1)
    )


async def start_takeover(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    by: str,
    reason: str | None,
    builtin: domain.Catalog,
    kind: domain.TakeoverKind = domain.BY_PERSON,
    reply_days: int = domain.REPLY_DAYS,
) -> Takeover:
    """A human takes a person over (``takeover.started``): every automated email to them is held;
    sequences that list ``takeover`` among their exits end (409 when one is already open). One a
    reply started (``kind="reply"``) ends by itself after ``reply_days`` business days."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is not None:
        raise Conflict(f"lead {lead_id} is already taken over by {current.by} since {current.started_at.isoformat()}")
    now = tx.now()
    ends_at = domain.reply_takeover_ends(now, days=reply_days) if kind == domain.BY_REPLY else None
    takeover = Takeover(
        id=time_ordered_id(),
        lead_id=lead_id,
        by=by,
        reason=reason,
        started_at=now,
        started_by_kind=kind,
        ends_at=ends_at,
    )
    tx.session.add(takeover)
    tx.emit("takeover.started", ev.TakeoverStarted(by=by, reason=reason), lead_id=lead_id)
    catalog = await current_catalog(tx, builtin)
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type="takeover.started")
    return takeover


def _close(tx: UnitOfWork, takeover: Takeover, *, by: str | None) -> Takeover:
    takeover.ended_at = tx.now()
    takeover.ended_by = by
    tx.emit("takeover.ended", ev.TakeoverEnded(by=by), lead_id=takeover.lead_id)
    return takeover


async def end_takeover(tx: UnitOfWork, *, lead_id: uuid.UUID, by: str | None) -> Takeover:
    """The human hands the person back (``takeover.ended``): held steps go out (409 when no
    takeover is open)."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is None:
        raise Conflict(f"lead {lead_id} is not taken over")
    return _close(tx, current, by=by)


async def extend_takeover(tx: UnitOfWork, *, lead_id: uuid.UUID, days: int) -> Takeover:
    """A person keeps a reply's takeover longer: its end moves ``days`` business days later
    (409 when no takeover is open, or when a person started it: that one has no end to move).
    A notice of the old end still open is closed; the new end gets its own."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is None:
        raise Conflict(f"lead {lead_id} is not taken over")
    if current.ends_at is None:
        raise Conflict(f"lead {lead_id} was taken over by a person: it lasts until they end it")
    stale = await tx.session.scalar(
        select(Task).where(Task.source == _ending_source(current), Task.status != domain.TASK_DONE)
    )
    if stale is not None:
        stale.status, stale.done_at, stale.closed_reason = domain.TASK_DONE, tx.now(), "the takeover was extended"
        stale.snoozed_until = None
    current.ends_at = domain.extended_end(current.ends_at, now=tx.now(), days=days)
    return current


# --------------------------------------------------------------------------- the scheduled pass


def _ending_source(takeover: Takeover) -> str:
    # Once per end: an extension moves the end, and the new end is told about again.
    assert takeover.ends_at is not None
    return f"takeover_ending:{takeover.id}:{takeover.ends_at.isoformat()}"


async def review_takeover(
    tx: UnitOfWork, takeover: Takeover, *, task_policy: domain.TaskPolicy, metrics: NurtureMetrics
) -> bool:
    """One open takeover now: a reply's that ran out ends (``takeover.ended`` by ``system``;
    held steps go out as when a person ends it); one about to end is told to the owner once;
    a person's is a reminder once per week it is open. True when it ended."""
    now = tx.now()
    decision = domain.review_takeover(
        takeover.started_by_kind, started_at=takeover.started_at, ends_at=takeover.ends_at, now=now
    )
    if decision.end:
        _close(tx, takeover, by=domain.ENDED_BY_SYSTEM)
        return True
    if not decision.notice and not decision.week:
        return False
    contact = await known_contact(tx, takeover.lead_id)
    name = (contact.name if contact is not None else None) or "this person"
    kind = "takeover_ending" if decision.notice else "takeover_open"
    owner = domain.task_owner(
        kind,
        owner_id=contact.owner_id if contact is not None else None,
        account_owner_id=contact.account_owner_id if contact is not None else None,
    )
    if decision.notice:
        assert takeover.ends_at is not None
        source = _ending_source(takeover)
        title = f"The takeover of {name} ends {takeover.ends_at:%a %d %b}: extend it or let automation resume"
        due_at = takeover.ends_at
    else:
        source = f"takeover_open:{takeover.id}:{decision.week}"
        title = f"{name} is still taken over (week {decision.week}): end it when you are done"
        due_at = now + task_policy.due_in(kind)
    await add_task(
        tx,
        lead_id=takeover.lead_id,
        kind=kind,
        source=source,
        title=title,
        detail=f"taken over by {takeover.by} since {takeover.started_at.isoformat()}",
        owner_id=owner,
        due_at=due_at,
        metrics=metrics,
    )
    return False


async def _lock_open(tx: UnitOfWork, ids: list[uuid.UUID]) -> Mapping[uuid.UUID, Takeover]:
    # Another instance's pass (or a person ending it) holds a row: skipped, seen next time.
    rows = await tx.session.scalars(
        select(Takeover).where(Takeover.id.in_(ids), Takeover.ended_at.is_(None)).with_for_update(skip_locked=True)
    )
    return {row.id: row for row in rows}


async def review_takeovers(
    uow: UnitOfWorkFactory,
    *,
    jobs: Jobs,
    now: datetime,
    task_policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
) -> int:
    """Scheduled: every open takeover reviewed (``review_takeover``), a page a transaction, each
    alone when its page fails. Returns how many ended."""
    async with uow.sessions() as session:
        ids = list(await session.scalars(select(Takeover.id).where(Takeover.ended_at.is_(None))))
    if not ids:
        return 0

    async def step(tx: UnitOfWork, takeover: Takeover) -> bool:
        # Looked up when called, so a test may replace it for one takeover.
        return await review_takeover(tx, takeover, task_policy=task_policy, metrics=metrics)

    result = await jobs(JOB).run(uow, ids, step, now=now, load=_lock_open, chunk=PAGE)
    return sum(result.done.values())

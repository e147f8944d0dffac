"""Tasks in one place, with owner and due date: what nurture raises itself (a high-value reply,
a complaint, a churn risk, a client blocked by dunning, a client moved to tier fire) and what
other services raise (``task.raised``, closed by ``task.closed``), each made once per source,
listed by owner, status and due date, done, snoozed or handed to someone else."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select

from services.nurture import domain
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import known_contact
from services.nurture.store import Contact, Task
from shared import events as ev
from shared.db import AccessPerson
from shared.errors import Conflict, Invalid, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

# Who may have a task on their list: the roles that work with people and clients.
OWNER_ROLES = frozenset({"sales", "success", "admin"})


async def add_task(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    kind: str,
    source: str,
    title: str,
    detail: str | None,
    owner_id: uuid.UUID | None,
    due_at: datetime,
    metrics: NurtureMetrics,
    task_id: uuid.UUID | None = None,
) -> Task | None:
    """A task for a person, once per source (None when that source already made one)."""
    if await tx.session.scalar(select(Task.id).where(Task.source == source[:200])) is not None:
        return None
    task = Task(
        id=task_id or time_ordered_id(),
        lead_id=lead_id,
        kind=kind,
        title=title[:300],
        detail=detail,
        status=domain.TASK_OPEN,
        source=source[:200],
        created_at=tx.now(),
        owner_id=owner_id,
        due_at=due_at,
    )
    tx.session.add(task)
    tx.after_commit(lambda: metrics.tasks.labels(kind).inc())
    return task


async def raise_task(
    tx: UnitOfWork,
    *,
    contact: Contact,
    kind: str,
    source: str,
    title: str,
    detail: str | None,
    policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
) -> Task | None:
    """A task nurture raises about a person: on the list of whoever the kind goes to (their
    owner or account owner, ``domain.task_owner``), due after the policy's hours for it."""
    return await add_task(
        tx,
        lead_id=contact.lead_id,
        kind=kind,
        source=source,
        title=title,
        detail=detail,
        owner_id=domain.task_owner(kind, owner_id=contact.owner_id, account_owner_id=contact.account_owner_id),
        due_at=tx.now() + policy.due_in(kind),
        metrics=metrics,
    )


async def on_client_event(
    tx: UnitOfWork,
    *,
    contact: Contact,
    event: ev.Envelope,
    payload: Any,
    policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
) -> Task | None:
    """The task an event about a client asks of a person, if any: a churn risk is a founder's
    check-in; dunning moving into a state that holds the client's work is a call about it;
    included hours left unused two months running are a plan for them with the client; a
    client moved to tier fire is a let-go review."""
    name = contact.name or "this client"
    detail: str | None
    if isinstance(payload, ev.ChurnRiskRaised):
        reasons = ", ".join(payload.reasons) or "health fell"
        kind, source = "churn_risk", f"churn_risk:{event.event_id}"
        title, detail = f"Founder check-in with {name}: can we help?", f"churn risk: {reasons}"
    elif isinstance(payload, ev.DunningStateChanged) and domain.blocks_service(payload.from_state, payload.to_state):
        case_id = payload.invoice_id or payload.subscription_id or event.event_id
        kind, source = "dunning_blocked", f"dunning_blocked:{case_id}"
        title = f"Client blocked by dunning: call {name} about the unpaid invoice"
        detail = f"dunning {payload.from_state or 'none'} -> {payload.to_state}" + (
            f": {payload.reason}" if payload.reason else ""
        )
    elif isinstance(payload, ev.ClientHoursUnderused):
        kind, source = "hours_underused", f"hours_underused:{event.event_id}"
        title = f"Plan the unused hours with {name}: under half used {payload.months} months running"
        detail = f"{payload.used_hours} of {payload.included_hours} hours used last month"
    elif isinstance(payload, ev.ClientTierChanged) and domain.lets_go(payload.to_tier):
        if payload.from_tier is not None and domain.lets_go(payload.from_tier):
            return None
        kind, source = "let_go_review", f"let_go_review:{event.event_id}"
        title = f"Let-go review: {name} moved to tier {payload.to_tier}"
        detail = ", ".join(payload.reasons) or None
    else:
        return None
    return await raise_task(
        tx, contact=contact, kind=kind, source=source, title=title, detail=detail, policy=policy, metrics=metrics
    )


# --------------------------------------------------------------------------- raised elsewhere


async def file_raised(tx: UnitOfWork, event: ev.Envelope, payload: ev.TaskRaised, *, metrics: NurtureMetrics) -> None:
    """Another service raised a task (``task.raised``): kept with its id, kind, owner, due date
    and source, once per source (a redelivery or a raise again changes nothing). Without an
    owner it goes to the lead's owner, if nurture knows one."""
    if event.lead_id is None:
        raise Invalid("task.raised: the envelope names no lead_id")
    contact = await known_contact(tx, event.lead_id)
    erased = contact is not None and contact.erased_at is not None
    await add_task(
        tx,
        task_id=payload.task_id,
        lead_id=event.lead_id,
        kind=payload.kind,
        source=payload.source,
        # An erased person's tasks keep no words that may name them (as ``erasure`` leaves them).
        title=f"{payload.kind} (the person was erased)" if erased else payload.title,
        detail=None if erased else payload.detail,
        owner_id=payload.owner_id or (contact.owner_id if contact is not None else None),
        due_at=payload.due_at,
        metrics=metrics,
    )


async def close_raised(tx: UnitOfWork, payload: ev.TaskClosed) -> None:
    """The need behind a task went away (``task.closed``): done, with the reason. A task already
    done, or one nurture never had, stays as it is."""
    task = await tx.session.get(Task, payload.task_id)
    if task is not None and task.status != domain.TASK_DONE:
        _done(tx, task, payload.reason)


# --------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class TaskView:
    """A task as its owner sees it now: its status (a snooze that ran out is open) and whether
    it is overdue."""

    task: Task
    status: domain.TaskStatus
    overdue: bool


def view(task: Task, now: datetime) -> TaskView:
    status = domain.task_status(task.status, task.snoozed_until, now=now)
    return TaskView(task, status, domain.is_overdue(task.status, task.snoozed_until, task.due_at, now=now))


def _status_is(status: str, now: datetime) -> ColumnElement[bool]:
    """``domain.task_status`` as SQL."""
    woken = and_(Task.status == domain.TASK_SNOOZED, or_(Task.snoozed_until.is_(None), Task.snoozed_until <= now))
    if status == domain.TASK_OPEN:
        return or_(Task.status == domain.TASK_OPEN, woken)
    if status == domain.TASK_SNOOZED:
        return and_(Task.status == domain.TASK_SNOOZED, Task.snoozed_until > now)
    return Task.status == status


async def list_tasks(
    tx: UnitOfWork,
    *,
    status: domain.TaskStatus | None,
    lead_id: uuid.UUID | None = None,
    owner_id: uuid.UUID | None = None,
    unowned: bool = False,
    due_before: datetime | None = None,
    limit: int = 100,
) -> list[TaskView]:
    """Tasks, soonest due first: of one status now (None: any), of one person, on one owner's
    list (``owner_id``) or on nobody's (``unowned``), due before a moment."""
    now = tx.now()
    query = select(Task).order_by(Task.due_at, Task.created_at, Task.id).limit(limit)
    if status is not None:
        query = query.where(_status_is(status, now))
    if lead_id is not None:
        query = query.where(Task.lead_id == lead_id)
    if owner_id is not None:
        query = query.where(Task.owner_id == owner_id)
    elif unowned:
        query = query.where(Task.owner_id.is_(None))
    if due_before is not None:
        query = query.where(Task.due_at < due_before)
    return [view(task, now) for task in await tx.session.scalars(query)]


async def _task(tx: UnitOfWork, task_id: uuid.UUID) -> Task:
    task = await tx.session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    return task


def _done(tx: UnitOfWork, task: Task, reason: str) -> None:
    task.status, task.done_at, task.closed_reason = domain.TASK_DONE, tx.now(), reason[:200]
    task.snoozed_until = None


async def close_task(tx: UnitOfWork, task_id: uuid.UUID) -> TaskView:
    """Mark a task done by hand (404 when there is none; done already: as it was)."""
    task = await _task(tx, task_id)
    if task.status != domain.TASK_DONE:
        _done(tx, task, "done")
    return view(task, tx.now())


async def snooze_task(tx: UnitOfWork, task_id: uuid.UUID, *, until: datetime) -> TaskView:
    """Put a task away until a later moment on the business clock: off the open list until then
    (422 for a moment not in the future, 409 for a task already done)."""
    task = await _task(tx, task_id)
    now = tx.now()
    if task.status == domain.TASK_DONE:
        raise Conflict(f"task {task_id} is done; there is nothing to snooze")
    if until <= now:
        raise Invalid(f"until: must be later than now ({now.isoformat()}), not {until.isoformat()}")
    task.status, task.snoozed_until = domain.TASK_SNOOZED, until
    return view(task, now)


async def assign_task(tx: UnitOfWork, task_id: uuid.UUID, *, owner_id: uuid.UUID | None) -> TaskView:
    """Give a task to someone else (None: to nobody, an admin's pool). The owner must be an
    active person in sales, success or admin (422 naming ``owner_id`` otherwise)."""
    task = await _task(tx, task_id)
    if owner_id is not None:
        person = await tx.session.get(AccessPerson, owner_id)
        if person is None or person.kind != "person":
            raise Invalid(f"owner_id: no person {owner_id}")
        if not person.active:
            raise Invalid(f"owner_id: {person.email} is disabled")
        if person.role not in OWNER_ROLES:
            raise Invalid(f"owner_id: {person.email} is {person.role}; tasks go to sales, success or admin")
    task.owner_id = owner_id
    return view(task, tx.now())


async def open_and_overdue(tx: UnitOfWork, *, now: datetime) -> dict[str, tuple[int, int]]:
    """Open tasks by kind, and how many of them are overdue (for the gauges)."""
    rows = await tx.session.execute(
        select(Task.kind, func.count(), func.sum(case((Task.due_at < now, 1), else_=0)))
        .where(_status_is(domain.TASK_OPEN, now))
        .group_by(Task.kind)
    )
    return {kind: (int(count), int(overdue or 0)) for kind, count, overdue in rows.all()}

"""Tasks: work for a person (a founder check-in on churn risk, a high-value reply to answer, a
complaint to call back), made once per source and counted once committed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from services.nurture.metrics import NurtureMetrics
from services.nurture.store import Contact, Task
from shared import events as ev
from shared.errors import NotFound
from shared.uow import UnitOfWork


async def add_task(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    kind: str,
    source: str,
    title: str,
    detail: str | None,
    metrics: NurtureMetrics,
) -> Task | None:
    """A task for a person, once per source (None when that source already made one)."""
    if await tx.session.scalar(select(Task.id).where(Task.source == source)) is not None:
        return None
    task = Task(
        id=uuid.uuid4(),
        lead_id=lead_id,
        kind=kind,
        title=title[:300],
        detail=detail,
        status="open",
        source=source[:200],
        created_at=tx.now(),
    )
    tx.session.add(task)
    tx.after_commit(lambda: metrics.tasks.labels(kind).inc())
    return task


async def task_for_churn_risk(
    tx: UnitOfWork, *, contact: Contact, event: ev.Envelope, payload: Any, metrics: NurtureMetrics
) -> Task | None:
    """A churn risk raised for a client is a founder's check-in, once per event."""
    reasons = ", ".join(getattr(payload, "reasons", []) or []) or "health fell"
    return await add_task(
        tx,
        lead_id=contact.lead_id,
        kind="churn_risk",
        source=f"churn_risk:{event.event_id}",
        title=f"Founder check-in with {contact.name or 'this client'}: can we help?",
        detail=f"churn risk: {reasons}",
        metrics=metrics,
    )


async def list_tasks(tx: UnitOfWork, *, status: str | None, lead_id: uuid.UUID | None, limit: int) -> list[Task]:
    """Tasks, newest first: any status (None) or one, of everyone or of one person."""
    query = select(Task).order_by(Task.created_at.desc(), Task.id).limit(limit)
    if status:
        query = query.where(Task.status == status)
    if lead_id:
        query = query.where(Task.lead_id == lead_id)
    return list(await tx.session.scalars(query))


async def close_task(tx: UnitOfWork, task_id: uuid.UUID) -> Task:
    """Mark a task done (404 when there is none)."""
    task = await tx.session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    task.status = "done"
    return task

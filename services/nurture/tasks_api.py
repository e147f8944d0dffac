"""Nurture's task routes (docs/design.md, "HTTP surface"): the one task list, whichever service
raised a task; validate, call one use case of ``tasks.py``, answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from services.nurture import tasks as task_cases
from services.nurture.schemas import SnoozeIn, TaskOut, TaskOwnerIn
from shared.access import policy as P
from shared.access.context import owner_query
from shared.access.rules import need
from shared.service import ServiceRuntime


def task_out(seen: task_cases.TaskView) -> TaskOut:
    task = seen.task
    return TaskOut(
        task_id=task.id,
        lead_id=task.lead_id,
        kind=task.kind,
        title=task.title,
        detail=task.detail,
        status=seen.status,
        owner_id=task.owner_id,
        due_at=task.due_at,
        overdue=seen.overdue,
        snoozed_until=task.snoozed_until,
        done_at=task.done_at,
        closed_reason=task.closed_reason,
        created_at=task.created_at,
    )


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["tasks"])
    uow = runtime.uow

    @api.get("/tasks", dependencies=[need(P.TASKS_READ)], response_model=list[TaskOut])
    async def list_tasks(
        request: Request,
        owner: str | None = Query(None, max_length=60, description="me, none (nobody's) or a person id"),
        status: Literal["open", "done", "snoozed", "all"] = Query("open", description="now; all: any"),
        due_before: Annotated[AwareDatetime | None, Query(description="due before this moment (RFC 3339)")] = None,
        lead_id: uuid.UUID | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[TaskOut]:
        """Work for people, soonest due first, whichever service raised it: follow-ups of replies,
        complaints, churn risks, clients blocked by dunning, let-go reviews, and the sales tasks
        leads raises (first touch overdue, next steps, tenders, hand-offs)."""
        owned = owner_query(owner)
        async with uow() as tx:
            found = await task_cases.list_tasks(
                tx,
                status=None if status == "all" else status,
                lead_id=lead_id,
                owner_id=owned.person_id if owned else None,
                unowned=owned is not None and owned.pool,
                due_before=due_before,
                limit=limit,
            )
            return [task_out(seen) for seen in found]

    @api.post("/tasks/{task_id}/done", dependencies=[need(P.TASKS_WRITE)], response_model=TaskOut)
    async def task_done(task_id: uuid.UUID) -> TaskOut:
        """Mark a task done."""
        async with uow() as tx:
            return task_out(await task_cases.close_task(tx, task_id))

    @api.post("/tasks/{task_id}/snooze", dependencies=[need(P.TASKS_WRITE)], response_model=TaskOut)
    async def snooze(task_id: uuid.UUID, body: SnoozeIn) -> TaskOut:
        """Put a task away until ``until`` (later than now on the business clock): it leaves the
        open list and comes back by itself then."""
        async with uow() as tx:
            return task_out(await task_cases.snooze_task(tx, task_id, until=body.until))

    @api.put("/tasks/{task_id}/owner", dependencies=[need(P.TASKS_WRITE)], response_model=TaskOut)
    async def give(task_id: uuid.UUID, body: TaskOwnerIn) -> TaskOut:
        """Give a task to an active person in sales, success or admin (null: to nobody)."""
        async with uow() as tx:
            return task_out(await task_cases.assign_task(tx, task_id, owner_id=body.owner_id))

    return api

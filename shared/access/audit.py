"""The audit trail: one append-only row per write and per read of one person's record.

Rows are written by a background writer in group commits (one transaction for whatever
arrived meanwhile), right after each answer: an audited request costs no transaction of its
own. A process killed in the few milliseconds between an answer and its group commit loses
that request's row; the request's effects are already committed by then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.db import AuditRow
from shared.events import Actor

log = logging.getLogger(__name__)


class AuditItem(BaseModel):
    id: int = Field(description="grows with every row; page with after_id")
    at: datetime
    actor: Actor
    action: str = Field(examples=["POST /deals/{deal_id}/won"])
    lead_id: uuid.UUID | None = Field(description="the person the request was about, when it names one")
    request_id: str = Field(description="the request's X-Request-ID (sent, or made up and answered)")
    outcome: str = Field(description="ok, denied (403), refused (other 4xx) or failed (5xx)")
    status: int = Field(description="the HTTP status answered")


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_after_id: int | None = Field(description="pass as after_id for the next page; null at the end")


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 403:
        return "denied"
    return "refused" if status < 500 else "failed"


# A Core INSERT of the table, built once: the rows are plain dicts that nothing reads back
# as objects, so the ORM's bulk INSERT added only its own bookkeeping to each group commit.
_INSERT = insert(cast(Table, AuditRow.__table__))


class AuditLog:
    def __init__(self, sessions: async_sessionmaker, *, max_pending: int = 100_000) -> None:
        self.sessions = sessions
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one write at a time: rows keep the order they were recorded in
        self.dropped = 0

    def record(
        self, *, at: datetime, actor: Actor, action: str, lead_id: uuid.UUID | None, request_id: str, status: int
    ) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.error("audit backlog full (%d rows): a row was dropped", self.max_pending)
            return
        self._pending.append(
            {
                "at": at,
                "actor_kind": actor.kind,
                "actor_id": actor.id[:100],
                "actor_role": actor.role,
                "action": action[:200],
                "lead_id": lead_id,
                "request_id": request_id[:100],
                "outcome": outcome_of(status),
                "status": status,
            }
        )
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            # Not started (an app served without its lifespan, in a test): write inline, later.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._write_pending())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._write_pending()

    async def flush(self, patience: float = 10.0) -> None:
        """Wait until every row recorded so far is written (tests, shutdown)."""
        if self._task is None:
            await self._write_pending()
            return
        await asyncio.wait_for(self._idle.wait(), patience)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_pending()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write audit rows; trying again in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    async def _write_pending(self) -> None:
        async with self._lock:
            if not self._pending:
                self._idle.set()
                return
            rows, self._pending = self._pending, []
            try:
                async with self.sessions() as session, session.begin():
                    await session.execute(_INSERT, rows)
            except BaseException:
                self._pending[:0] = rows
                raise
            if not self._pending:
                self._idle.set()


def audit_item(r: AuditRow) -> AuditItem:
    """One row of the trail as ``GET /audit`` (and an export) shows it."""
    return AuditItem(
        id=r.id,
        at=r.at,
        actor=Actor(kind=r.actor_kind, id=r.actor_id, role=r.actor_role),
        action=r.action,
        lead_id=r.lead_id,
        request_id=r.request_id,
        outcome=r.outcome,
        status=r.status,
    )


async def read_audit(
    sessions: async_sessionmaker,
    *,
    lead_id: uuid.UUID | None,
    actor_id: str | None,
    since: datetime | None,
    action: str | None,
    after_id: int,
    limit: int,
) -> AuditPage:
    query = select(AuditRow).where(AuditRow.id > after_id)
    if lead_id is not None:
        query = query.where(AuditRow.lead_id == lead_id)
    if actor_id is not None:
        query = query.where(AuditRow.actor_id == actor_id)
    if since is not None:
        query = query.where(AuditRow.at >= since)
    if action is not None:
        query = query.where(AuditRow.action == action)
    async with sessions() as session:
        rows = list(await session.scalars(query.order_by(AuditRow.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [audit_item(r) for r in rows]
    return AuditPage(items=items, next_after_id=rows[-1].id if more and rows else None)

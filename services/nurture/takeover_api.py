"""Nurture's takeover routes (docs/design.md, "HTTP surface"): start, show, extend and end a
human takeover; validate, call one use case of ``takeover.py``, answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from services.nurture import domain, takeover
from services.nurture.schemas import TakeoverExtendIn, TakeoverIn, TakeoverOut
from services.nurture.store import Takeover
from shared.access import policy as P
from shared.access.rules import need
from shared.errors import NotFound
from shared.service import ServiceRuntime


def takeover_out(row: Takeover) -> TakeoverOut:
    return TakeoverOut(
        lead_id=row.lead_id,
        by=row.by,
        reason=row.reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
        active=row.ended_at is None,
        started_by_kind=domain.BY_REPLY if row.started_by_kind == domain.BY_REPLY else domain.BY_PERSON,
        ends_at=row.ends_at,
    )


def router(runtime: ServiceRuntime, *, builtin: domain.Catalog) -> APIRouter:
    api = APIRouter()
    uow = runtime.uow

    @api.post(
        "/leads/{lead_id}/takeover",
        dependencies=[need(P.TAKEOVER_WRITE)],
        status_code=201,
        response_model=TakeoverOut,
        tags=["takeover"],
    )
    async def take_over(lead_id: uuid.UUID, body: TakeoverIn) -> TakeoverOut:
        """A human takes the person over: automated emails wait (``takeover.started``) until
        they end it."""
        async with uow() as tx:
            return takeover_out(
                await takeover.start_takeover(tx, lead_id=lead_id, by=body.by, reason=body.reason, builtin=builtin)
            )

    @api.get(
        "/leads/{lead_id}/takeover",
        dependencies=[need(P.MESSAGES_READ, person=True)],
        response_model=TakeoverOut,
        tags=["takeover"],
    )
    async def show(lead_id: uuid.UUID) -> TakeoverOut:
        """The person's takeover open now or, when none is, the last one (404: never taken
        over): who started it (``reply`` or ``person``) and when it ends by itself, if it does."""
        async with uow() as tx:
            found = await takeover.latest_takeover(tx, lead_id)
            if found is None:
                raise NotFound(f"lead {lead_id} was never taken over")
            return takeover_out(found)

    @api.post(
        "/leads/{lead_id}/takeover/extend",
        dependencies=[need(P.TAKEOVER_WRITE)],
        response_model=TakeoverOut,
        tags=["takeover"],
    )
    async def extend(lead_id: uuid.UUID, body: TakeoverExtendIn) -> TakeoverOut:
        """Keep a reply's takeover longer: it ends ``days`` business days later (409 when no
        takeover is open, or when a person's, which has no end)."""
        async with uow() as tx:
            return takeover_out(await takeover.extend_takeover(tx, lead_id=lead_id, days=body.days))

    @api.delete(
        "/leads/{lead_id}/takeover",
        dependencies=[need(P.TAKEOVER_WRITE)],
        response_model=TakeoverOut,
        tags=["takeover"],
    )
    async def release(lead_id: uuid.UUID, by: str | None = Query(None, max_length=200)) -> TakeoverOut:
        """Hand the person back to automation (``takeover.ended``); held emails go out."""
        async with uow() as tx:
            return takeover_out(await takeover.end_takeover(tx, lead_id=lead_id, by=by))

    return api

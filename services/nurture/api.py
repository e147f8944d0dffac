"""Nurture's HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query

from services.nurture import handlers
from services.nurture.schemas import MessageOut, TakeoverIn, TakeoverOut
from services.nurture.settings import Settings
from services.nurture.store import Message, Takeover
from shared.http import api_key_guard
from shared.service import ServiceRuntime


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        message_id=message.message_id,
        sequence=message.sequence,
        step=message.step,
        template=message.template,
        subject=message.subject,
        category=message.category,  # type: ignore[arg-type]
        sent_at=message.sent_at,
    )


def takeover_out(takeover: Takeover) -> TakeoverOut:
    return TakeoverOut(
        lead_id=takeover.lead_id,
        by=takeover.by,
        reason=takeover.reason,
        started_at=takeover.started_at,
        ended_at=takeover.ended_at,
        ended_by=takeover.ended_by,
        active=takeover.ended_at is None,
    )


def router(runtime: ServiceRuntime, settings: Settings) -> APIRouter:
    api = APIRouter()
    uow = runtime.uow
    write = [Depends(api_key_guard(settings.api_key.get_secret_value()))]

    @api.get("/leads/{lead_id}/messages", response_model=list[MessageOut], tags=["messages"])
    async def read_messages(lead_id: uuid.UUID) -> list[MessageOut]:
        """Emails sent to a person, oldest first."""
        async with uow() as tx:
            return [message_out(m) for m in await handlers.list_messages(tx, lead_id)]

    @api.post(
        "/leads/{lead_id}/takeover", status_code=201, response_model=TakeoverOut, dependencies=write, tags=["takeover"]
    )
    async def take_over(lead_id: uuid.UUID, body: TakeoverIn) -> TakeoverOut:
        """A human takes the person over: automated emails wait (``takeover.started``)."""
        async with uow() as tx:
            return takeover_out(await handlers.start_takeover(tx, lead_id, by=body.by, reason=body.reason))

    @api.delete("/leads/{lead_id}/takeover", response_model=TakeoverOut, dependencies=write, tags=["takeover"])
    async def release(lead_id: uuid.UUID, by: str | None = Query(None, max_length=200)) -> TakeoverOut:
        """Hand the person back to automation (``takeover.ended``); held emails go out."""
        async with uow() as tx:
            return takeover_out(await handlers.end_takeover(tx, lead_id, by=by))

    return api

"""Retention's route for ending a relationship on the agency's side: validate, call one use
case, answer."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter

from services.retention import termination
from services.retention.context import Context
from services.retention.schemas import ClientOut, TerminationIn, TerminationOut
from services.retention.store import Termination
from shared.access import policy as P
from shared.access.rules import need
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def termination_out(row: Termination, now: datetime) -> TerminationOut:
    """A termination as answered: its status is computed from ``effective_at`` and now."""
    return TerminationOut(
        termination_id=row.id,
        lead_id=row.lead_id,
        reason=row.reason,
        comment=row.comment,
        notice_days=row.notice_days,
        effective_at=row.effective_at,
        status=termination.status_of(row, now),
        subscription_ids=[uuid.UUID(s) for s in row.subscription_ids or []],
        created_at=row.created_at,
    )


async def with_termination(tx: UnitOfWork, client: ClientOut) -> ClientOut:
    """GET /clients/{lead_id} shows the termination, if the agency ended the relationship."""
    row = await termination.termination_of(tx, client.lead_id)
    if row is not None:
        client.termination = termination_out(row, tx.now())
    return client


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.post(
        "/clients/{lead_id}/termination",
        dependencies=[need(P.TERMINATIONS_WRITE)],
        status_code=201,
        response_model=TerminationOut,
        tags=["terminations"],
    )
    async def terminate(lead_id: uuid.UUID, body: TerminationIn) -> TerminationOut:
        """The agency ends the relationship (not the client): `client.terminated`, with the notice
        given; billing ends the subscriptions at `effective_at` and issues a final invoice, nurture
        sends the offboarding e-mails, leads flags a later lead from the same person or company.
        404 for an unknown client; 409 when already terminated or with no relationship left."""
        async with uow() as tx:
            row = await termination.terminate_client(
                tx, ctx, lead_id, reason=body.reason, notice_days=body.notice_days, comment=body.comment
            )
            return termination_out(row, tx.now())

    return api

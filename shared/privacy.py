"""Erasure plumbing every service shares: what the reliability tables keep of a person.

A service's erasure use case clears its own tables; the plumbing tables hold copies it would
miss. The outbox keeps sent events (with the person's name, address, comments) for a few days,
and the Idempotency-Key table keeps the first answer to every write (a lead's name, a comment).
``forget_person`` drops the sent outbox rows keyed by the person (the events are on the
broker; the rows only wait for pruning) and withholds the stored answers that name them (the
key stays, so a repeated request is still answered, not done twice).
"""

from __future__ import annotations

import json
import uuid

from sqlalchemy import ColumnElement, TextClause, bindparam, delete, func, literal, or_, select, text, update
from sqlalchemy.types import LargeBinary

from shared.db import IdempotencyKeyRow, OutboxRow
from shared.uow import UnitOfWork

WITHHELD = json.dumps({"detail": "this answer named a person who has since been erased"}).encode()


async def forget_person(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """Remove the person's data from the outbox and the stored HTTP answers, in ``tx``."""
    key = str(lead_id).encode()
    await tx.session.execute(delete(OutboxRow).where(OutboxRow.key == key, OutboxRow.sent_at.is_not(None)))
    body = IdempotencyKeyRow.response_body
    mentions: ColumnElement[bool] | TextClause
    if tx.session.get_bind().dialect.name == "postgresql":
        mentions = text("position(:needle in idempotency_keys.response_body) > 0").bindparams(
            bindparam("needle", key, type_=LargeBinary)
        )
    else:
        mentions = func.instr(body, literal(key, LargeBinary)) > 0
    named = select(IdempotencyKeyRow.key).where(
        IdempotencyKeyRow.state == "done",
        body.is_not(None),
        body != WITHHELD,
        or_(IdempotencyKeyRow.path.contains(str(lead_id)), mentions),
    )
    for row_key in list(await tx.session.scalars(named)):
        await tx.session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.key == row_key)
            .values(
                response_body=WITHHELD,
                response_headers={"content-type": "application/json", "content-length": str(len(WITHHELD))},
            )
        )

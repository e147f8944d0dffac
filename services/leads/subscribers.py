"""Leads' subscribers: translate an event into one use case."""

from __future__ import annotations

from typing import Any

from services.leads import handlers
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


async def moves_stage(tx: UnitOfWork, event: Envelope, _payload: Any) -> None:
    await handlers.apply_stage_event(tx, event.lead_id, event.type)


def register(runtime: ServiceRuntime) -> None:
    runtime.consume(
        {
            "lead.sales_ready": moves_stage,
            "deposit.cleared": moves_stage,
            "cancellation.completed": moves_stage,
        }
    )

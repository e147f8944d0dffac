"""Nurture's subscribers: translate an event into one use case."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.nurture import domain, handlers
from shared import events as ev
from shared.consumer import Handler
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def register(runtime: ServiceRuntime, *, catalog: domain.Catalog, wake_sender: Callable[[], None]) -> None:
    async def captured(tx: UnitOfWork, event: Envelope, payload: ev.LeadCaptured) -> None:
        if event.lead_id is not None:
            await handlers.enroll_captured_lead(
                tx, catalog=catalog, lead_id=event.lead_id, data=payload, on_scheduled=wake_sender
            )

    async def erased(tx: UnitOfWork, event: Envelope, _payload: ev.LeadErased) -> None:
        if event.lead_id is not None:
            await handlers.erase_contact(tx, event.lead_id)

    async def exits(tx: UnitOfWork, event: Envelope, _payload: Any) -> None:
        await handlers.end_enrollments(tx, catalog=catalog, lead_id=event.lead_id, event_type=event.type)

    consumed: dict[str, Handler] = {"lead.captured": captured, "lead.erased": erased}
    # Exit events come from the sequences' data (erasure already ends every enrollment).
    for event_type in sorted(catalog.exit_events()):
        consumed.setdefault(event_type, exits)
    runtime.consume(consumed)

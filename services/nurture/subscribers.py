"""Nurture's subscriber: translate an event into one use case."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from services.nurture import content, domain, handlers
from shared.consumer import Handler
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def register(
    runtime: ServiceRuntime,
    *,
    catalog: domain.Catalog,
    wake_sender: Callable[[], None],
    forget_mail: Callable[[list[uuid.UUID]], None] | None = None,
) -> None:
    async def happened(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        await handlers.on_event(
            tx, builtin=catalog, event=event, payload=payload, on_scheduled=wake_sender, on_erased=forget_mail
        )

    # Every event type of the topics nurture reads: any may trigger or end a sequence written
    # through the API later, and several keep the person's profile (stage, tier) current.
    async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
        await handlers.prefetch(tx, events, builtin=catalog)

    consumed: dict[str, Handler] = {event_type: happened for event_type in sorted(content.triggers())}
    runtime.consume(consumed, prefetch=prefetch)

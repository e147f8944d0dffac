"""Who is acting now: set by the access middleware for an HTTP request, read by the unit of
work when it writes an event (``actor`` in the envelope). Consumers and scheduled jobs run with
none set, so their events name the system."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

from shared.events import Actor

CURRENT_ACTOR: ContextVar[Actor | None] = ContextVar("clientflow_actor", default=None)


def system_actor(service: str) -> Actor:
    return Actor(kind="system", id=service, role=None)


def current_person() -> uuid.UUID | None:
    """The person making the current request (``owner=me``), or None for an integration, the
    bootstrap key or the system."""
    actor = CURRENT_ACTOR.get()
    if actor is None or actor.kind != "person":
        return None
    try:
        return uuid.UUID(actor.id)
    except ValueError:
        return None

"""Who is acting now: set by the access middleware for an HTTP request, read by the unit of
work when it writes an event (``actor`` in the envelope). Consumers and scheduled jobs run with
none set, so their events name the system."""

from __future__ import annotations

from contextvars import ContextVar

from shared.events import Actor

CURRENT_ACTOR: ContextVar[Actor | None] = ContextVar("clientflow_actor", default=None)


def system_actor(service: str) -> Actor:
    return Actor(kind="system", id=service, role=None)

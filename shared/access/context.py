"""Who is acting now: set by the access middleware for an HTTP request, read by the unit of
work when it writes an event (``actor`` in the envelope). Consumers and scheduled jobs run with
none set, so their events name the system."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from shared.errors import Invalid
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


@dataclass(frozen=True)
class OwnerQuery:
    """``?owner=me|none|<person id>``: one person's (``person_id``), or nobody's (None: the pool)."""

    person_id: uuid.UUID | None

    @property
    def pool(self) -> bool:
        return self.person_id is None


def owner_query(owner: str | None) -> OwnerQuery | None:
    """Read ``?owner=``: ``me`` is the person asking (an integration's or the bootstrap token is
    nobody), ``none`` the pool, else a person's id; a 422 naming ``owner`` for anything else."""
    if owner is None:
        return None
    if owner == "none":
        return OwnerQuery(None)
    if owner == "me":
        me = current_person()
        if me is None:
            raise Invalid("owner: 'me' needs a person's token (this one is an integration's)")
        return OwnerQuery(me)
    try:
        return OwnerQuery(uuid.UUID(owner))
    except ValueError:
        raise Invalid(f"owner: expected me, none or a person id, not {owner[:60]!r}") from None

"""The access routes every service serves: ``GET /me`` and ``GET /audit``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.access.audit import AuditPage, read_audit
from shared.access.policy import AUDIT_READ, PEOPLE_MANAGE, SELF_READ, permissions
from shared.access.rules import need
from shared.db import AccessPerson, AccessToken
from shared.errors import Invalid, NotFound
from shared.events import Actor


class MeOut(BaseModel):
    actor: Actor
    name: str
    email: str | None
    via: str = Field(description="token (personal), bootstrap (CLIENTFLOW_API_KEY) or oidc")
    scopes: list[str] = Field(description="permissions the token is narrowed to; empty: all of the role's")
    permissions: list[str] = Field(description="what this caller may do here")
    languages: list[str]


class TokenKnown(BaseModel):
    token_id: uuid.UUID
    active: bool = Field(description="not revoked, not expired, and its person is active")
    revision: int


def access_router(sessions: async_sessionmaker) -> APIRouter:
    api = APIRouter(tags=["access"])

    @api.get("/me", response_model=MeOut, dependencies=[need(SELF_READ)])
    async def me(request: Request) -> MeOut:
        """Who the token is: the person, their role and what they may do."""
        principal = request.state.principal
        held = [
            name
            for name, p in sorted(permissions().items())
            if principal.role in p.roles and (not principal.scopes or name in principal.scopes)
        ]
        return MeOut(
            actor=principal.actor,
            name=principal.name,
            email=principal.email,
            via=principal.via,
            scopes=list(principal.scopes),
            permissions=held,
            languages=list(principal.languages),
        )

    @api.get("/access/tokens/{token_id}", response_model=TokenKnown, dependencies=[need(PEOPLE_MANAGE)])
    async def token_known(token_id: uuid.UUID) -> TokenKnown:
        """Whether this service knows a token yet, and if it works (an admin asks, without
        presenting the token: `clientflow users add` waits on this, so that trying a token the
        people topic has not brought here yet never counts as a bad one)."""
        async with sessions() as session:
            row = await session.get(AccessToken, token_id)
            person = await session.get(AccessPerson, row.person_id) if row is not None else None
        if row is None:
            raise NotFound(f"token {token_id} is not known here (yet)")
        now = datetime.now(UTC)
        active = (
            row.revoked_at is None
            and (row.expires_at is None or row.expires_at > now)
            and person is not None
            and person.active
        )
        return TokenKnown(token_id=row.id, active=active, revision=row.revision)

    @api.get("/audit", response_model=AuditPage, dependencies=[need(AUDIT_READ)])
    async def audit(
        lead_id: uuid.UUID | None = None,
        actor_id: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[datetime | None, Query(description="rows at or after this moment (RFC 3339)")] = None,
        action: Annotated[str | None, Query(max_length=200, description='e.g. "POST /deals/{deal_id}/won"')] = None,
        after_id: Annotated[int, Query(ge=0, le=2**62, description="the previous page's next_after_id")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        """Who did what to whom in this service: every write and every read of one person's
        record, oldest first."""
        if since is not None and since.tzinfo is None:
            raise Invalid("since needs a time zone (say 2026-12-01T00:00:00Z)")
        return await read_audit(
            sessions, lead_id=lead_id, actor_id=actor_id, since=since, action=action, after_id=after_id, limit=limit
        )

    return api

"""Helpers for the access tests: people with tokens written straight into a service's access
tables (as the people topic's fold would), and an app served without its lifespan."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.access.principal import new_token, token_hash, token_prefix
from shared.db import AccessPerson, AccessToken
from shared.events import ROLES
from tests.support import API_KEY, service_settings


def build_app(service: str, database_url: str, **overrides: Any) -> FastAPI:
    """The service's app on ``database_url``, with a broker address nothing listens on (the
    routes only write to the outbox; nothing here starts the broker)."""
    settings_cls = importlib.import_module(f"services.{service}.settings").Settings
    create_app = importlib.import_module(f"services.{service}.app").create_app
    settings = service_settings(settings_cls, bootstrap="127.0.0.1:1", database_url=database_url, **overrides)
    return create_app(settings)


async def migrate(service: str, database_url: str) -> None:
    from clientflow.services import ServiceSpec
    from shared.migrations import upgrade_async

    await upgrade_async(ServiceSpec(service).migrations, database_url)


async def add_person(
    sessions: async_sessionmaker,
    role: str,
    *,
    active: bool = True,
    expires_at: datetime | None = None,
    revoked: bool = False,
    scopes: list[str] | None = None,
    kind: str = "person",
) -> tuple[uuid.UUID, str]:
    """A person of ``role`` with one token; returns (person id, token)."""
    now = datetime.now(UTC)
    person_id, token_id = uuid.uuid4(), uuid.uuid4()
    token = new_token(token_id)
    async with sessions() as session, session.begin():
        session.add(
            AccessPerson(
                id=person_id,
                email=f"{role}-{person_id.hex[:8]}@agency.test",
                name=f"A {role}",
                role=role,
                kind=kind,
                languages=["en"],
                active=active,
                revision=1,
                changed_at=now,
            )
        )
        session.add(
            AccessToken(
                id=token_id,
                person_id=person_id,
                token_hash=token_hash(token),
                prefix=token_prefix(token),
                scopes=scopes or [],
                created_at=now,
                expires_at=expires_at,
                revoked_at=now if revoked else None,
                revision=1,
            )
        )
    return person_id, token


async def one_per_role(sessions: async_sessionmaker) -> dict[str, str]:
    """A token for each role, and the bootstrap key as ``bootstrap``."""
    tokens = {role: (await add_person(sessions, role))[1] for role in ROLES}
    tokens["bootstrap"] = API_KEY
    return tokens


def expired() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)

"""The agency's people and their tokens: leads owns the registry (the sales department lives
here) and announces every change on the ``people`` topic, whole states keyed by person or
token, which every service folds into its own access tables.

Times here are real (wall clock), not business time: a token's expiry is security."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from shared.access.authn import wall_now
from shared.access.policy import permission
from shared.access.principal import new_token, token_hash, token_prefix
from shared.db import AccessPerson, AccessToken
from shared.errors import Conflict, Invalid, NotFound
from shared.events import PersonState, TokenState
from shared.uow import UnitOfWork

MAX_TOKEN_DAYS = 3650


@dataclass
class IssuedToken:
    """A new token: the row, and the token itself, shown this once and never again."""

    row: AccessToken
    token: str


def person_state(person: AccessPerson) -> PersonState:
    return PersonState(
        person_id=person.id,
        email=person.email,
        name=person.name,
        role=person.role,
        kind=person.kind,
        languages=list(person.languages or []),
        active=person.active,
        revision=person.revision,
        changed_at=person.changed_at,
    )


def token_state(token: AccessToken) -> TokenState:
    return TokenState(
        token_id=token.id,
        person_id=token.person_id,
        token_hash=token.token_hash,
        prefix=token.prefix,
        scopes=list(token.scopes or []),
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        revision=token.revision,
    )


def _announce_person(tx: UnitOfWork, event_type: str, person: AccessPerson) -> None:
    tx.emit(event_type, person_state(person), lead_id=None, key=f"person:{person.id}")


def check_scopes(role: str, scopes: list[str]) -> list[str]:
    """Scopes are permission names the role holds: a token can be narrowed, never widened."""
    clean = sorted(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    for name in clean:
        try:
            wanted = permission(name)
        except KeyError as exc:
            raise Invalid(str(exc.args[0])) from None
        if role not in wanted.roles:
            raise Invalid(f"role {role} does not hold {name}, so a token of theirs cannot be scoped to it")
    return clean


async def find_person(tx: UnitOfWork, ref: str) -> AccessPerson:
    """A person by id or e-mail."""
    try:
        person = await tx.session.get(AccessPerson, uuid.UUID(ref))
    except ValueError:
        person = await tx.session.scalar(select(AccessPerson).where(AccessPerson.email == ref.strip().lower()))
    if person is None:
        raise NotFound(f"no person {ref}")
    return person


async def add_person(
    tx: UnitOfWork,
    *,
    email: str,
    name: str,
    role: str,
    kind: str,
    languages: list[str],
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[AccessPerson, IssuedToken]:
    """Add a person with their first token (``person.added``, ``token.created``)."""
    email = email.lower()
    if await tx.session.scalar(select(AccessPerson.id).where(AccessPerson.email == email)) is not None:
        raise Conflict(f"{email} is already a person here (add a token with POST /people/{{email}}/tokens)")
    person = AccessPerson(
        id=uuid.uuid4(),
        email=email,
        name=name,
        role=role,
        kind=kind,
        languages=languages,
        active=True,
        revision=1,
        changed_at=wall_now(),
    )
    tx.session.add(person)
    _announce_person(tx, "person.added", person)
    issued = await create_token(tx, person, scopes=scopes, expires_at=expires_at)
    return person, issued


async def change_person(
    tx: UnitOfWork,
    person: AccessPerson,
    *,
    name: str | None,
    role: str | None,
    languages: list[str] | None,
    active: bool | None,
) -> AccessPerson:
    """Change a person (``person.updated``, or ``person.disabled`` when they are disabled)."""
    changed = False
    for field, value in (("name", name), ("role", role), ("languages", languages), ("active", active)):
        if value is not None and getattr(person, field) != value:
            setattr(person, field, value)
            changed = True
    if not changed:
        return person
    person.revision += 1
    person.changed_at = wall_now()
    _announce_person(tx, "person.disabled" if active is False else "person.updated", person)
    return person


async def create_token(
    tx: UnitOfWork, person: AccessPerson, *, scopes: list[str], expires_at: datetime | None
) -> IssuedToken:
    """A new token for ``person`` (``token.created``); only its digest is kept."""
    now = wall_now()
    if expires_at is not None:
        if expires_at <= now:
            raise Invalid("expires_at is in the past")
        if expires_at > now + timedelta(days=MAX_TOKEN_DAYS):
            raise Invalid(f"a token lives {MAX_TOKEN_DAYS} days at most")
    token_id = uuid.uuid4()
    token = new_token(token_id)
    row = AccessToken(
        id=token_id,
        person_id=person.id,
        token_hash=token_hash(token),
        prefix=token_prefix(token),
        scopes=check_scopes(person.role, scopes),
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
        revision=1,
    )
    tx.session.add(row)
    tx.emit("token.created", token_state(row), lead_id=None, key=f"token:{row.id}")
    return IssuedToken(row, token)


async def revoke_token(tx: UnitOfWork, token_id: uuid.UUID) -> AccessToken:
    """Revoke a token (``token.revoked``); revoking it again changes nothing."""
    row = await tx.session.get(AccessToken, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = wall_now()
        row.revision += 1
        tx.emit("token.revoked", token_state(row), lead_id=None, key=f"token:{row.id}")
    return row


async def tokens_of(tx: UnitOfWork, person_id: uuid.UUID) -> list[AccessToken]:
    return list(
        await tx.session.scalars(
            select(AccessToken).where(AccessToken.person_id == person_id).order_by(AccessToken.created_at)
        )
    )


async def list_people(tx: UnitOfWork, *, active: bool | None, role: str | None) -> list[AccessPerson]:
    query = select(AccessPerson).order_by(AccessPerson.email)
    if active is not None:
        query = query.where(AccessPerson.active == active)
    if role is not None:
        query = query.where(AccessPerson.role == role)
    return list(await tx.session.scalars(query))

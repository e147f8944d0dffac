"""The people registry's HTTP routes (admin): people, their roles and their tokens.
``clientflow users`` and ``clientflow tokens`` call these."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from services.leads import people
from shared.access.authn import Authenticator, wall_now
from shared.access.policy import PEOPLE_MANAGE
from shared.access.rules import need
from shared.db import AccessPerson, AccessToken
from shared.errors import Invalid
from shared.events import Role
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def _languages(value: list[str]) -> list[str]:
    clean = []
    for code in value:
        code = code.strip().lower()
        if not code:
            continue
        if len(code) != 2 or pycountry.languages.get(alpha_2=code) is None:
            raise ValueError(f"{code!r} is not an ISO 639-1 language code (say en, bn, fa)")
        clean.append(code)
    return list(dict.fromkeys(clean))


class _Expiry(BaseModel):
    expires_at: AwareDatetime | None = Field(default=None, description="when the token stops working")
    expires_in_days: int | None = Field(default=None, ge=1, le=people.MAX_TOKEN_DAYS, description="or: days from now")
    scopes: list[str] = Field(
        default_factory=list, max_length=50, description="narrow the token to these permissions (say leads.capture)"
    )

    def expiry(self) -> datetime | None:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise Invalid("give expires_at or expires_in_days, not both")
        if self.expires_in_days is not None:
            return wall_now() + timedelta(days=self.expires_in_days)
        return self.expires_at


class PersonIn(_Expiry):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    email: str = Field(max_length=320, examples=["maria@agency.example"])
    name: str = Field(min_length=1, max_length=200, examples=["Maria Rahman"])
    role: Role
    kind: Literal["person", "integration"] = Field(default="person", description="integration: a machine account")
    languages: list[str] = Field(default_factory=list, max_length=20, examples=[["en", "bn"]])

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return validate_email(value, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise ValueError(f"invalid email: {exc}") from exc

    @field_validator("languages")
    @classmethod
    def _langs(cls, value: list[str]) -> list[str]:
        return _languages(value)


class PersonChange(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: Role | None = None
    languages: list[str] | None = Field(default=None, max_length=20)
    active: bool | None = None

    @field_validator("languages")
    @classmethod
    def _langs(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _languages(value)


class TokenIn(_Expiry):
    pass


class TokenOut(BaseModel):
    token_id: uuid.UUID
    person_id: uuid.UUID
    prefix: str = Field(description="the token's start, to recognise it")
    scopes: list[str]
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None
    active: bool


class NewTokenOut(TokenOut):
    token: str = Field(description="the token itself: shown this once, kept nowhere")


class PersonOut(BaseModel):
    person_id: uuid.UUID
    email: str
    name: str
    role: Role
    kind: str
    languages: list[str]
    active: bool
    changed_at: AwareDatetime
    tokens: list[TokenOut] = Field(default_factory=list)


class PersonCreated(PersonOut):
    token: NewTokenOut


def token_out(row: AccessToken) -> TokenOut:
    now = wall_now()
    return TokenOut(
        token_id=row.id,
        person_id=row.person_id,
        prefix=row.prefix,
        scopes=list(row.scopes or []),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        active=row.revoked_at is None and (row.expires_at is None or row.expires_at > now),
    )


def new_token_out(issued: people.IssuedToken) -> NewTokenOut:
    return NewTokenOut(**token_out(issued.row).model_dump(), token=issued.token)


def person_out(person: AccessPerson, tokens: list[AccessToken] | None = None) -> PersonOut:
    return PersonOut(
        person_id=person.id,
        email=person.email,
        name=person.name,
        role=person.role,
        kind=person.kind,
        languages=list(person.languages or []),
        active=person.active,
        changed_at=person.changed_at,
        tokens=[token_out(t) for t in tokens or []],
    )


def router(
    runtime: ServiceRuntime,
    authenticator: Authenticator,
    *,
    on_changed: Callable[[UnitOfWork, AccessPerson], Awaitable[object]] | None = None,
) -> APIRouter:
    """The registry's routes; ``on_changed(tx, person)`` runs in the transaction that changed a
    person (the sales team gives a disabled rep's leads back to the pool)."""
    uow = runtime.uow
    manage = [need(PEOPLE_MANAGE)]
    api = APIRouter(tags=["people"])

    @api.post("/people", status_code=201, response_model=PersonCreated, dependencies=manage)
    async def add_person(body: PersonIn) -> PersonCreated:
        """Add a person (or an integration account) with a role and their first token, which
        the answer shows this once."""
        async with uow() as tx:
            tx.after_commit(authenticator.forget)
            person, issued = await people.add_person(
                tx,
                email=body.email,
                name=body.name,
                role=body.role,
                kind=body.kind,
                languages=body.languages,
                scopes=body.scopes,
                expires_at=body.expiry(),
            )
        return PersonCreated(**person_out(person).model_dump(), token=new_token_out(issued))

    @api.get("/people", response_model=list[PersonOut], dependencies=manage)
    async def list_people(active: bool | None = None, role: Role | None = None) -> list[PersonOut]:
        async with uow() as tx:
            return [
                person_out(p, await people.tokens_of(tx, p.id))
                for p in await people.list_people(tx, active=active, role=role)
            ]

    @api.get("/people/{person}", response_model=PersonOut, dependencies=manage)
    async def read_person(person: str) -> PersonOut:
        """A person by id or e-mail, with their tokens (never the tokens themselves)."""
        async with uow() as tx:
            found = await people.find_person(tx, person)
            return person_out(found, await people.tokens_of(tx, found.id))

    @api.patch("/people/{person}", response_model=PersonOut, dependencies=manage)
    async def change_person(person: str, body: PersonChange) -> PersonOut:
        """Change a person's name, role or languages, or disable (``active: false``) or enable
        them: every service refuses a disabled person's tokens within seconds."""
        async with uow() as tx:
            tx.after_commit(authenticator.forget)
            found = await people.change_person(
                tx,
                await people.find_person(tx, person),
                name=body.name,
                role=body.role,
                languages=body.languages,
                active=body.active,
            )
            if on_changed is not None:
                await on_changed(tx, found)
            return person_out(found, await people.tokens_of(tx, found.id))

    @api.post("/people/{person}/disable", response_model=PersonOut, dependencies=manage)
    async def disable_person(person: str) -> PersonOut:
        """Disable a person: their tokens stop working everywhere; their data stays."""
        return await change_person(person, PersonChange(active=False))

    @api.post("/people/{person}/tokens", status_code=201, response_model=NewTokenOut, dependencies=manage)
    async def create_token(person: str, body: TokenIn) -> NewTokenOut:
        """A new token for a person, optionally expiring and narrowed to some permissions."""
        async with uow() as tx:
            found = await people.find_person(tx, person)
            if not found.active:
                raise Invalid(f"{found.email} is disabled; enable them first")
            return new_token_out(await people.create_token(tx, found, scopes=body.scopes, expires_at=body.expiry()))

    @api.delete("/tokens/{token_id}", response_model=TokenOut, dependencies=manage)
    async def revoke_token(token_id: uuid.UUID) -> TokenOut:
        """Revoke a token everywhere; revoking it again changes nothing."""
        async with uow() as tx:
            tx.after_commit(authenticator.forget)
            return token_out(await people.revoke_token(tx, token_id))

    @api.get("/tokens", response_model=list[TokenOut], dependencies=manage)
    async def list_tokens(person: str | None = Query(None, description="id or e-mail")) -> list[TokenOut]:
        async with uow() as tx:
            if person is not None:
                return [token_out(t) for t in await people.tokens_of(tx, (await people.find_person(tx, person)).id)]
            return [
                token_out(t) for t in await tx.session.scalars(select(AccessToken).order_by(AccessToken.created_at))
            ]

    return api

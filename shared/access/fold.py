"""Folding the ``people`` topic into a service's own access tables: every event carries the
whole state of one person or token with a growing ``revision``, so applying them in any order,
twice, or only the last one per key (a compacted topic) ends in the same rows."""

from __future__ import annotations

from typing import Any

from shared.access.authn import Authenticator
from shared.db import AccessPerson, AccessToken
from shared.events import Envelope, PersonState, TokenState
from shared.uow import UnitOfWork


async def apply_person(tx: UnitOfWork, state: PersonState) -> None:
    row = await tx.session.get(AccessPerson, state.person_id)
    if row is None:
        tx.session.add(
            AccessPerson(
                id=state.person_id,
                email=state.email.lower(),
                name=state.name,
                role=state.role,
                kind=state.kind,
                languages=list(state.languages),
                active=state.active,
                revision=state.revision,
                changed_at=state.changed_at,
            )
        )
    elif state.revision > row.revision:
        row.email, row.name, row.role, row.kind = state.email.lower(), state.name, state.role, state.kind
        row.languages, row.active, row.revision, row.changed_at = (
            list(state.languages),
            state.active,
            state.revision,
            state.changed_at,
        )


async def apply_token(tx: UnitOfWork, state: TokenState) -> None:
    row = await tx.session.get(AccessToken, state.token_id)
    if row is None:
        tx.session.add(
            AccessToken(
                id=state.token_id,
                person_id=state.person_id,
                token_hash=state.token_hash,
                prefix=state.prefix,
                scopes=list(state.scopes),
                created_at=state.created_at,
                expires_at=state.expires_at,
                revoked_at=state.revoked_at,
                revision=state.revision,
            )
        )
    elif state.revision > row.revision:
        row.scopes, row.expires_at, row.revoked_at, row.revision = (
            list(state.scopes),
            state.expires_at,
            state.revoked_at,
            state.revision,
        )


def handlers(authenticator: Authenticator) -> dict[str, Any]:
    """The people topic's handlers for a service that follows the registry."""

    async def person(tx: UnitOfWork, _event: Envelope, payload: PersonState) -> None:
        await apply_person(tx, payload)
        tx.after_commit(authenticator.forget)

    async def token(tx: UnitOfWork, _event: Envelope, payload: TokenState) -> None:
        await apply_token(tx, payload)
        tx.after_commit(authenticator.forget)

    return {
        "person.added": person,
        "person.updated": person,
        "person.disabled": person,
        "token.created": token,
        "token.revoked": token,
    }

"""A follower's copy of the registry ends the same whatever the order, repetition or compaction
of the people topic's events: each carries a whole state and a revision."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from shared.access import fold
from shared.clock import make_clock
from shared.db import AccessPerson, AccessToken, PlumbingBase, create_engine
from shared.events import EVENT_TYPES, PersonState, TokenState, topic_of
from shared.uow import UnitOfWorkFactory

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_the_people_topic_is_in_the_contract() -> None:
    assert {name for name, t in EVENT_TYPES.items() if t.topic == "people"} == {
        "person.added",
        "person.updated",
        "person.disabled",
        "token.created",
        "token.revoked",
    }
    assert topic_of("token.revoked") == "people"
    assert "token" not in TokenState.model_fields  # only the digest travels


async def test_any_order_and_repetition_folds_to_the_last_state(tmp_path) -> None:
    person_id, token_id = uuid.uuid4(), uuid.uuid4()
    person = PersonState(
        person_id=person_id,
        email="Maria@Agency.example",
        name="Maria",
        role="sales",
        languages=["en"],
        revision=1,
        changed_at=NOW,
    )
    events = [
        person,
        person.model_copy(update={"role": "success", "revision": 2}),
        person.model_copy(update={"role": "success", "active": False, "revision": 3}),
    ]
    token = TokenState(
        token_id=token_id,
        person_id=person_id,
        token_hash="a" * 64,
        prefix="cf_000000000000",
        created_at=NOW,
        revision=1,
    )
    tokens = [token, token.model_copy(update={"revoked_at": NOW, "revision": 2})]
    finals = set()
    for order in itertools.permutations(range(3)):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex}.db")
        async with engine.begin() as conn:
            await conn.run_sync(PlumbingBase.metadata.create_all)
        uow = UnitOfWorkFactory(engine, producer="billing", clock=make_clock("system"))
        for index in [*order, order[0]]:  # one redelivered
            async with uow() as tx:
                await fold.apply_person(tx, events[index])
        for state in [tokens[1], tokens[0], tokens[1]]:
            async with uow() as tx:
                await fold.apply_token(tx, state)
        async with uow() as tx:
            row = await tx.session.scalar(select(AccessPerson))
            kept = await tx.session.scalar(select(AccessToken))
            finals.add((row.email, row.role, row.active, row.revision, kept.revoked_at is not None, kept.revision))
        await engine.dispose()
    assert finals == {("maria@agency.example", "success", False, 3, True, 2)}

"""The cheaper Idempotency-Key path (issue 22): a new key is claimed in one insert-or-nothing
statement (no read first) and its row is finished by a Core UPDATE, with the same row, answers
and replays as before; a key seen before is read and replayed, or refused, as ever."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI, Response
from sqlalchemy import select

from shared.access.principal import BOOTSTRAP
from shared.db import IdempotencyKeyRow, PlumbingBase, StateRow, create_engine, statement_log
from shared.http import IdempotencyMiddleware
from shared.uow import UnitOfWorkFactory


class _SignedIn:
    """What the access middleware leaves in the scope: keys are scoped to a caller."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        scope.setdefault("state", {})["principal"] = BOOTSTRAP
        await self.app(scope, receive, send)


class _Clock:
    moment = datetime(2031, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


async def test_a_new_key_is_claimed_in_one_statement_and_replayed_as_answered(tmp_path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'claim.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
    clock = _Clock()
    uow = UnitOfWorkFactory(engine, producer="test", clock=clock)
    app = FastAPI()
    made = 0

    @app.post("/things", status_code=201)
    async def make_thing(response: Response) -> dict[str, int]:
        nonlocal made
        made += 1
        async with uow() as tx:
            tx.session.add(StateRow(name=f"thing-{made}", value="x"))
        response.headers["X-Made"] = str(made)
        return {"made": made}

    app.add_middleware(IdempotencyMiddleware, sessions=uow.sessions, clock=clock, ttl=timedelta(hours=24))
    app.add_middleware(_SignedIn)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            log = statement_log(engine)
            first = await http.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
            assert first.status_code == 201 and first.json() == {"made": 1}
            # The key: claimed by an insert that does nothing on a stored key, not read first.
            assert not any(s.startswith("SELECT idempotency_keys") for s in log), log
            claims = [s for s in log if s.startswith("INSERT INTO idempotency_keys")]
            assert len(claims) == 1 and claims[0].endswith('ON CONFLICT ("key") DO NOTHING'), claims
            assert sum(s.startswith("UPDATE idempotency_keys") for s in log) == 1

            again = await http.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
            assert (again.status_code, again.json(), again.headers["x-made"]) == (201, {"made": 1}, "1")
            assert again.headers["idempotent-replayed"] == "true"
            other = await http.post("/things", json={"a": 2}, headers={"Idempotency-Key": "k-1"})
            assert other.status_code == 409 and "different request" in other.json()["detail"]
            assert made == 1

        async with engine.connect() as connection:
            row = (await connection.execute(select(IdempotencyKeyRow.__table__))).mappings().one()
        assert row["key"].endswith(":k-1") and (row["method"], row["path"]) == ("POST", "/things")
        assert (row["state"], row["status_code"]) == ("done", 201)
        assert json.loads(row["response_body"]) == {"made": 1}
        assert row["response_headers"]["x-made"] == "1"
        assert row["response_headers"]["content-length"] == str(len(first.content))
        assert row["created_at"] == clock.moment
    finally:
        await engine.dispose()


async def test_an_expired_key_found_by_the_claim_is_forgotten_and_claimed_again(tmp_path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'expired.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
    clock = _Clock()
    uow = UnitOfWorkFactory(engine, producer="test", clock=clock)
    app = FastAPI()
    made = 0

    @app.post("/things")
    async def make_thing() -> dict[str, int]:
        nonlocal made
        made += 1
        return {"made": made}

    app.add_middleware(IdempotencyMiddleware, sessions=uow.sessions, clock=clock, ttl=timedelta(hours=24))
    app.add_middleware(_SignedIn)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            assert (await http.post("/things", headers={"Idempotency-Key": "k"})).json() == {"made": 1}
            clock.moment += timedelta(hours=25)
            late = await http.post("/things", headers={"Idempotency-Key": "k"})
            assert late.json() == {"made": 2} and "idempotent-replayed" not in late.headers
            replay = await http.post("/things", headers={"Idempotency-Key": "k"})
            assert replay.json() == {"made": 2} and replay.headers["idempotent-replayed"] == "true"
        async with engine.connect() as connection:
            rows = (await connection.execute(select(IdempotencyKeyRow.__table__))).mappings().all()
        assert [(r["state"], r["created_at"]) for r in rows] == [("done", clock.moment)]
    finally:
        await engine.dispose()

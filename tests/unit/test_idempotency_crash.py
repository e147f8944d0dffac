"""An HTTP write cut off mid-request (its process killed) must leave neither its effects nor
its Idempotency-Key behind: the client's retry then runs for real, and the effect exists once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from shared.access.principal import BOOTSTRAP
from shared.clock import make_clock
from shared.db import IdempotencyKeyRow, PlumbingBase, StateRow, create_engine
from shared.http import IdempotencyMiddleware
from shared.uow import UnitOfWorkFactory


class _SignedIn:
    """What the access middleware leaves in the scope: keys are scoped to a caller."""

    def __init__(self, app, principal=BOOTSTRAP) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope, receive, send) -> None:
        scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)


async def _app(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'idem.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
    clock = make_clock("system")
    uow = UnitOfWorkFactory(engine, producer="test", clock=clock)
    reached, release = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.post("/things")
    async def make_thing() -> dict[str, str]:
        # Two transactions, as some use cases have; the process dies between them.
        async with uow() as tx:
            tx.session.add(StateRow(name=f"thing-{uuid.uuid4()}", value="x"))
        reached.set()
        await release.wait()
        async with uow() as tx:
            tx.session.add(StateRow(name=f"other-{uuid.uuid4()}", value="y"))
        return {"made": "yes"}

    app.add_middleware(IdempotencyMiddleware, sessions=uow.sessions, clock=clock, ttl=timedelta(hours=24))
    app.add_middleware(_SignedIn)
    return app, engine, reached, release


async def _count(engine, model) -> int:
    async with engine.connect() as connection:
        return await connection.scalar(select(func.count()).select_from(model))


async def test_a_request_cut_off_mid_way_leaves_nothing_and_its_retry_applies_once(tmp_path) -> None:
    app, engine, reached, release = await _app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        cut = asyncio.create_task(client.post("/things", headers={"Idempotency-Key": "k-1"}))
        await asyncio.wait_for(reached.wait(), 5)
        cut.cancel()  # the process goes away after its first transaction
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await cut
        assert await _count(engine, StateRow) == 0  # no effect without its answer
        assert await _count(engine, IdempotencyKeyRow) == 0  # and no key stuck "in progress"

        release.set()
        retried = await client.post("/things", headers={"Idempotency-Key": "k-1"})
        assert retried.status_code == 200, retried.text
        again = await client.post("/things", headers={"Idempotency-Key": "k-1"})
        assert again.headers.get("idempotent-replayed") == "true"
    assert await _count(engine, StateRow) == 2  # one request's two effects, once
    await engine.dispose()


async def test_a_failing_request_keeps_nothing(tmp_path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'idem.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
    clock = make_clock("system")
    uow = UnitOfWorkFactory(engine, producer="test", clock=clock)
    app = FastAPI()

    @app.post("/boom")
    async def boom() -> None:
        async with uow() as tx:
            tx.session.add(StateRow(name="half-done", value="x"))
        raise RuntimeError("a bug after the first transaction")

    app.add_middleware(IdempotencyMiddleware, sessions=uow.sessions, clock=clock, ttl=timedelta(hours=24))
    app.add_middleware(_SignedIn)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/boom", headers={"Idempotency-Key": "k-2"})
    assert response.status_code == 500
    assert await _count(engine, StateRow) == 0
    assert await _count(engine, IdempotencyKeyRow) == 0
    await engine.dispose()


async def test_a_key_replays_within_its_ttl_and_runs_again_once_expired(tmp_path) -> None:
    from datetime import datetime

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ttl.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)

    class Clock:
        moment = datetime(2031, 1, 1, tzinfo=UTC)

        def now(self) -> datetime:
            return self.moment

    clock = Clock()
    uow = UnitOfWorkFactory(engine, producer="test", clock=clock)
    app = FastAPI()

    @app.post("/things")
    async def make_thing() -> dict[str, str]:
        async with uow() as tx:
            tx.session.add(StateRow(name=f"thing-{uuid.uuid4()}", value="x"))
        return {"made": "yes"}

    app.add_middleware(IdempotencyMiddleware, sessions=uow.sessions, clock=clock, ttl=timedelta(hours=24))
    app.add_middleware(_SignedIn)

    async def things() -> int:
        async with uow() as tx:
            return await tx.session.scalar(
                select(func.count()).select_from(StateRow).where(StateRow.name.like("thing-%"))
            )

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            first = await http.post("/things", headers={"Idempotency-Key": "k"})
            clock.moment += timedelta(hours=23)
            again = await http.post("/things", headers={"Idempotency-Key": "k"})
            assert (first.status_code, again.status_code) == (200, 200)
            assert again.headers.get("idempotent-replayed") == "true"
            assert await things() == 1
            other = await http.post("/things?x=1", headers={"Idempotency-Key": "k"})
            assert other.status_code == 409
            clock.moment += timedelta(hours=2)  # 25 h after the first: forgotten, runs for real
            late = await http.post("/things", headers={"Idempotency-Key": "k"})
            assert late.status_code == 200 and "idempotent-replayed" not in late.headers
            assert await things() == 2
            async with uow() as tx:
                assert await tx.session.scalar(select(func.count()).select_from(IdempotencyKeyRow)) == 1
    finally:
        await engine.dispose()

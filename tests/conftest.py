"""Fixtures find their infrastructure as docs/design.md says (Reliability rules, where it runs):
an address in the environment (KAFKA_BOOTSTRAP_SERVERS, TEST_DATABASE_URL), else testcontainers
when a Docker engine answers, else the embedded broker and SQLite."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from shared.embedded import EmbeddedBroker
from tests.support import docker_answers


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    broker = EmbeddedBroker(log_file=log)
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[str | None]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    yield None


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database or "postgres",
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def fresh_database(server: str | None, tmp_path: Path, name: str = "db") -> Iterator[str]:
    """A new empty database: its own PostgreSQL database when a server is known, else SQLite."""
    if server is None:
        yield f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
        return
    db = f"cf_{name}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{db}"'))
    try:
        yield make_url(server).set(database=db, drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


@pytest.fixture
def database_url(_postgres_server: str | None, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(_postgres_server, tmp_path)


@pytest.fixture
def database_factory(_postgres_server: str | None, tmp_path: Path):
    """Make several fresh databases in one test (one per service)."""
    made: list[Iterator[str]] = []

    def make(name: str) -> str:
        gen = fresh_database(_postgres_server, tmp_path, name)
        made.append(gen)
        return next(gen)

    yield make
    for gen in made:
        for _ in gen:
            pass

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


# ------------------------------------------------------------------ the order files run in

# Seconds each long file takes in `make test`: the last CI run beside another worker for the six
# longest, the others measured alone here (`--durations`, rounded up). Every reliability and
# end-to-end file holds one or two tests, so xdist's own order (the files with the most tests
# first) handed them all out last: both workers then ran CPU-bound clusters against each other
# for the last ten minutes, each slowed by the other, after a first half in which both mostly
# waited on a broker with the CPU half idle.
LONG_FILES: dict[str, float] = {
    "tests/reliability/test_loop_lag.py": 198,
    "tests/reliability/test_intruders.py": 164,
    "tests/e2e/test_access.py": 117,
    "tests/reliability/test_http_fuzzing.py": 117,
    "tests/e2e/test_simulate.py": 110,
    "tests/reliability/test_crash_under_load.py": 95,
    "tests/reliability/test_poison_and_drift.py": 90,
    "tests/reliability/test_erasure.py": 60,
    "tests/reliability/test_broker_outage.py": 60,
    "tests/deploy/test_compose_starts.py": 60,
    "tests/e2e/test_agreements.py": 60,
    "tests/e2e/test_console_browser.py": 60,
    "tests/integration/test_billing_retainers.py": 55,
    "tests/integration/test_poison_property.py": 45,
    "tests/e2e/test_observability.py": 45,
    "tests/e2e/test_walking_skeleton.py": 40,
    "tests/deploy/test_deploy_files.py": 40,
    "tests/integration/test_billing_service.py": 33,
    "tests/integration/test_termination.py": 31,
    "tests/integration/test_export.py": 25,
    "tests/access/test_tokens_and_audit.py": 25,
    "tests/access/test_permission_matrix.py": 23,
    "tests/integration/test_dead_letters_cli.py": 21,
}
# Any other file, per test: a few seconds against a broker (tests/integration: 587 s for 129
# tests), a fraction of a second for the unit and console tests (fakes, no broker).
SECONDS_PER_TEST = {"unit": 0.1, "console": 0.2, "access": 1.0}
DEFAULT_SECONDS_PER_TEST = 4.5
LONG_S = 40.0


def _weight(path: str, count: int) -> float:
    if path in LONG_FILES:
        return LONG_FILES[path]
    kind = path.split("/")[1] if path.count("/") >= 2 else ""
    return count * SECONDS_PER_TEST.get(kind, DEFAULT_SECONDS_PER_TEST)


def interleaved(files: dict[str, float]) -> list[str]:
    """The files in the order to hand them out: the long ones longest first, each followed by
    its share of the short files (so one worker runs a long scenario while the other runs
    short, mostly waiting tests beside it), the shortest files last (so both workers end
    together)."""
    long = sorted((f for f, w in files.items() if w >= LONG_S), key=lambda f: -files[f])
    short = sorted((f for f, w in files.items() if w < LONG_S), key=lambda f: -files[f])
    long_s = sum(files[f] for f in long)
    share = sum(files[f] for f in short) / long_s if long_s else 0.0
    order: list[str] = []
    budget = 0.0
    for path in long:
        order.append(path)
        budget += files[path] * share
        while short and budget >= files[short[0]] / 2:
            budget -= files[short[0]]
            order.append(short.pop(0))
    return order + short


def pytest_configure(config: pytest.Config) -> None:
    # Keep the order below under `--dist loadfile` (xdist would sort the files by how many tests
    # each holds).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)  # after `-m` deselected what does not run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    counts: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        counts[path] = counts.get(path, 0) + 1
    rank = {path: n for n, path in enumerate(interleaved({p: _weight(p, c) for p, c in counts.items()}))}
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])  # stable: a file keeps its order

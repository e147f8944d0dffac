"""The broker, databases and service processes one benchmark round runs on (the processes
through the launcher ``clientflow run`` uses, ``clientflow/cluster.py``)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from clientflow.cluster import SERVICE_NAMES, TANSU_GROUP_TIMING, Instance, Launcher, amigrate

SERVICES = SERVICE_NAMES
API_KEY = "bench-" + uuid.uuid4().hex


class Databases:
    """One database per service and round: SQLite files (the default, as ``make run``) or
    PostgreSQL databases created on the server of ``database_url`` and dropped afterwards."""

    def __init__(self, workdir: Path, database_url: str | None) -> None:
        self.workdir = workdir
        self.server = make_url(database_url) if database_url else None
        self.created: list[str] = []

    @property
    def kind(self) -> str:
        return "postgresql" if self.server else "sqlite"

    async def make(self, name: str) -> str:
        if self.server is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return f"sqlite+aiosqlite:///{(self.workdir / f'{name}.db').resolve()}"
        return await self._create(name, "")

    async def copy(self, name: str, source: str) -> str:
        """A new database holding what ``source`` (made here, its services stopped) holds."""
        if self.server is None:
            from bench.history import copy_database, sqlite_path

            target = self.workdir / f"{name}.db"
            source_path = sqlite_path(source)
            assert source_path is not None
            await asyncio.to_thread(copy_database, source_path, target)
            return f"sqlite+aiosqlite:///{target.resolve()}"
        return await self._create(name, f' TEMPLATE "{make_url(source).database}"')

    async def _create(self, name: str, options: str) -> str:
        """A new PostgreSQL database on the server (dropped by ``drop_all``); its URL."""
        assert self.server is not None
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        database = f"bench_{name}_{uuid.uuid4().hex[:8]}"
        connection = await asyncpg.connect(**self._connect_args())
        try:
            await connection.execute(f'CREATE DATABASE "{database}"{options}')
        finally:
            await connection.close()
        self.created.append(database)
        return self.server.set(database=database).render_as_string(hide_password=False)

    async def unreachable(self) -> str | None:
        """Why the server cannot be used (None: it can, or SQLite)."""
        if self.server is None:
            return None
        import asyncpg

        try:
            connection = await asyncio.wait_for(asyncpg.connect(**self._connect_args()), 10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            return f"{type(error).__name__}: {error}"[:200]
        await connection.close()
        return None

    def _connect_args(self) -> dict:
        assert self.server is not None
        return {
            "host": self.server.host or "127.0.0.1",
            "port": self.server.port or 5432,
            "user": self.server.username,
            "password": self.server.password,
            "database": self.server.database,
        }

    async def drop_all(self) -> None:
        if self.server is None or not self.created:
            return
        import asyncpg

        connection = await asyncpg.connect(**self._connect_args())
        try:
            for database in self.created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await connection.close()
        self.created.clear()


async def migrate(service: str, url: str) -> None:
    await amigrate(service, url)


def launcher(workdir: Path) -> Launcher:
    """A launcher for one round's processes: the bench's API key and, as `clientflow run` uses
    on Tansu, short group timing and fetch wait (KAFKA_FETCH_MAX_WAIT_MS overrides the latter)."""
    env = {**os.environ, "CLIENTFLOW_API_KEY": API_KEY, **TANSU_GROUP_TIMING}
    started = Launcher(workdir, env=env)
    started.tansu_fetch_waits()
    return started


async def start_broker(workdir: Path, *, partitions: int) -> Launcher:
    """A launcher with its embedded broker started and the topics created."""
    started = launcher(workdir)
    try:
        await started.start_broker()
        await started.create_topics(partitions)
    except BaseException:
        started.stop()
        raise
    return started


async def consumed(client: httpx.AsyncClient, service: Instance) -> int:
    """Events the service has read so far (every outcome), from its Prometheus counter."""
    text = await metrics_text(client, service)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("clientflow_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def metrics_text(client: httpx.AsyncClient, service: Instance, *, attempts: int = 10) -> str:
    """The service's /metrics; a service busy with a large batch may answer late, so retry."""
    for attempt in range(attempts):
        try:
            return (await client.get(f"{service.url}/metrics", timeout=30)).text
        except httpx.HTTPError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")

"""The broker, databases and service processes one benchmark round runs on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from shared.broker import ensure_topics
from shared.embedded import EmbeddedBroker, free_port
from shared.migrations import upgrade

SERVICES = ("leads", "nurture", "billing", "retention")
ROOT = Path(__file__).resolve().parents[1]
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
        import asyncpg

        database = f"bench_{name}_{uuid.uuid4().hex[:8]}"
        connection = await asyncpg.connect(**self._connect_args())
        try:
            await connection.execute(f'CREATE DATABASE "{database}"')
        finally:
            await connection.close()
        self.created.append(database)
        return self.server.set(database=database).render_as_string(hide_password=False)

    def _connect_args(self) -> dict:
        assert self.server is not None
        return {
            "host": self.server.host or "127.0.0.1", "port": self.server.port or 5432,
            "user": self.server.username, "password": self.server.password, "database": self.server.database,
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
    await asyncio.to_thread(upgrade, ROOT / "services" / service / "migrations", url)


async def start_broker(workdir: Path, *, partitions: int) -> EmbeddedBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = await EmbeddedBroker(log_file=workdir / "broker.log").astart()
    await ensure_topics(broker.bootstrap_servers, partitions=partitions)
    return broker


@dataclass
class Service:
    name: str
    database_url: str
    workdir: Path
    bootstrap: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        prefix = self.name.upper()
        return {
            **os.environ,
            "CLIENTFLOW_DATA_DIR": str(self.workdir),
            "CLIENTFLOW_API_KEY": API_KEY,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            # Short group timing and fetch wait, as `clientflow run` uses on Tansu (a joining member
            # waits about half the session timeout there; a fetch waits its whole max wait).
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "KAFKA_FETCH_MAX_WAIT_MS": os.environ.get("KAFKA_FETCH_MAX_WAIT_MS", "20"),
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_DATABASE_URL": self.database_url,
            f"{prefix}_MIGRATE_ON_START": "false",
            f"{prefix}_CREATE_TOPICS_ON_START": "false",
            **self.extra_env,
        }

    def spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"], env=self.env(), stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT,
            )

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.workdir}/{self.name}.log")
                try:
                    if (await client.get(f"{self.url}/health/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready in {timeout}s")

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the process so far."""
        assert self.process is not None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def consumed(client: httpx.AsyncClient, service: Service) -> int:
    """Events the service has read so far (every outcome), from its Prometheus counter."""
    text = await metrics_text(client, service)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("clientflow_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def metrics_text(client: httpx.AsyncClient, service: Service, *, attempts: int = 10) -> str:
    """The service's /metrics; a service busy with a large batch may answer late, so retry."""
    for attempt in range(attempts):
        try:
            return (await client.get(f"{service.url}/metrics", timeout=30)).text
        except httpx.HTTPError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")

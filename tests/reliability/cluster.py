"""A Clientflow cluster of real processes for reliability scenarios: the embedded broker, and
any number of instances of each service, which can be killed (SIGKILL), restarted, and the
broker frozen (SIGSTOP) and thawed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.broker import ensure_topics
from shared.embedded import EmbeddedBroker, free_port
from shared.migrations import upgrade
from tests.support import API_KEY

SERVICES = ("leads", "nurture", "billing", "retention")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instance:
    service: str
    index: int
    port: int
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    workdir: Path
    database_urls: dict[str, str]
    instances_per_service: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    partitions: int = 6
    broker: EmbeddedBroker | None = None
    instances: list[Instance] = field(default_factory=list)

    def env(self, instance: Instance) -> dict[str, str]:
        prefix = instance.service.upper()
        assert self.broker is not None
        return {
            **os.environ,
            "CLIENTFLOW_DATA_DIR": str(self.workdir),
            "CLIENTFLOW_API_KEY": API_KEY,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            f"{prefix}_PORT": str(instance.port),
            f"{prefix}_DATABASE_URL": self.database_urls[instance.service],
            f"{prefix}_MIGRATE_ON_START": "false",
            f"{prefix}_CREATE_TOPICS_ON_START": "false",
            f"{prefix}_RELAY_POLL_INTERVAL_S": "0.2",
        }

    async def start(self) -> None:
        """The broker and every instance, ready. Should one not come up, whatever did is stopped
        before the error is raised (scenarios call this before their try/finally)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = await EmbeddedBroker(log_file=self.workdir / "broker.log").astart()
            await ensure_topics(self.broker.bootstrap_servers, partitions=self.partitions)
            for service in SERVICES:
                await asyncio.to_thread(upgrade, ROOT / "services" / service / "migrations", self.database_urls[service])
                for index in range(self.instances_per_service.get(service, 0)):
                    self.instances.append(Instance(service, index, free_port()))
            for instance in self.instances:
                self.spawn(instance)
            await asyncio.gather(*(self.wait_ready(i) for i in self.instances))
        except BaseException:
            await self.stop()
            raise

    def spawn(self, instance: Instance) -> None:
        log = open(self.workdir / f"{instance.service}-{instance.index}.log", "ab")  # noqa: SIM115
        instance.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{instance.service}"],
            env=self.env(instance),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    async def wait_ready(self, instance: Instance, timeout: float = 90) -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < timeout:
                assert instance.process is not None
                if instance.process.poll() is not None:
                    raise RuntimeError(f"{instance.service}-{instance.index} exited {instance.process.returncode}")
                try:
                    if (await client.get(f"{instance.url}/health/ready")).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{instance.service}-{instance.index} not ready in {timeout}s")

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances if i.service == service]

    def url(self, service: str) -> str:
        """An instance that is up (the first one alive)."""
        for instance in self.of(service):
            if instance.process is not None and instance.process.poll() is None:
                return instance.url
        raise RuntimeError(f"no {service} instance is running")

    def kill(self, instance: Instance) -> None:
        assert instance.process is not None
        instance.process.send_signal(signal.SIGKILL)
        instance.process.wait()
        instance.kills += 1

    async def restart(self, instance: Instance) -> float:
        self.spawn(instance)
        return await self.wait_ready(instance)

    async def stop(self) -> None:
        for instance in self.instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.process.terminate()
        for instance in self.instances:
            if instance.process is not None:
                try:
                    instance.process.wait(15)
                except subprocess.TimeoutExpired:
                    instance.process.kill()
        if self.broker is not None:
            self.broker.stop()

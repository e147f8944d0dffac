"""A Clientflow cluster of real processes for reliability scenarios: the embedded broker, and
any number of instances of each service, which can be killed (SIGKILL), restarted, and the
broker frozen (SIGSTOP) and thawed. A thin layer over the launcher ``clientflow run`` uses
(``clientflow/cluster.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clientflow.cluster import ROOT, SERVICE_NAMES, TANSU_GROUP_TIMING, Instance, Launcher, amigrate
from shared.embedded import EmbeddedBroker
from tests.support import API_KEY

SERVICES = SERVICE_NAMES

__all__ = ["ROOT", "SERVICES", "Cluster", "Instance"]


@dataclass
class Cluster:
    workdir: Path
    database_urls: dict[str, str]
    instances_per_service: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    partitions: int = 6
    launcher: Launcher = field(init=False)

    def __post_init__(self) -> None:
        env = {**os.environ, "CLIENTFLOW_API_KEY": API_KEY, **TANSU_GROUP_TIMING}
        # Relays poll their outbox more often than the default, so audits wait less.
        env |= {f"{service.upper()}_RELAY_POLL_INTERVAL_S": "0.2" for service in SERVICES}
        self.launcher = Launcher(self.workdir, env=env)

    @property
    def broker(self) -> EmbeddedBroker | None:
        return self.launcher.broker

    @property
    def instances(self) -> list[Instance]:
        return self.launcher.instances

    async def start(self) -> None:
        """The broker and every instance, ready. Should one not come up, whatever did is stopped
        before the error is raised (scenarios call this before their try/finally)."""
        try:
            await self.launcher.start_broker()
            await self.launcher.create_topics(self.partitions)
            for service in SERVICES:
                await amigrate(service, self.database_urls[service])
                for _ in range(self.instances_per_service.get(service, 0)):
                    self.launcher.add(service, database_url=self.database_urls[service])
            await self.launcher.start()
        except BaseException:
            await self.stop()
            raise

    def env(self, instance: Instance) -> dict[str, str]:
        return self.launcher.child_env(instance)

    def spawn(self, instance: Instance) -> None:
        self.launcher.spawn(instance)

    async def wait_ready(self, instance: Instance, patience: float = 90) -> float:
        return await self.launcher.wait_ready(instance, patience)

    def of(self, service: str) -> list[Instance]:
        return self.launcher.of(service)

    def url(self, service: str) -> str:
        """An instance that is up (the first one alive)."""
        for instance in self.of(service):
            if instance.running:
                return instance.url
        raise RuntimeError(f"no {service} instance is running")

    def kill(self, instance: Instance) -> None:
        self.launcher.kill(instance)

    async def restart(self, instance: Instance) -> float:
        return await self.launcher.restart(instance)

    async def stop(self) -> None:
        self.launcher.stop()

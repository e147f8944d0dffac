"""The one launcher of Clientflow's processes: the embedded broker and the services, each run
as ``python -m services.<name>``, started, watched (readiness, crashes, logs) and stopped.

``clientflow run``, the benchmark (``bench/``) and the reliability harness
(``tests/reliability/cluster.py``) all start the system through :class:`Launcher`, so a
service process gets the same environment, log file and readiness check wherever it runs.

A run goes: :meth:`Launcher.start_broker` (unless a broker is given), :meth:`create_topics`,
:func:`migrate` each database (services started here never migrate or create topics
themselves), :meth:`Launcher.add` one :class:`Instance` per process, :meth:`Launcher.start`
(spawn and wait for ``/health/ready``), then :meth:`Launcher.watch` or the caller's own work,
and :meth:`Launcher.stop` (SIGTERM, then SIGKILL after a grace period; the broker last).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clientflow.services import SERVICES
from shared.broker import ensure_topics
from shared.embedded import EmbeddedBroker, free_port
from shared.migrations import upgrade
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
SERVICE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)
# Processes that are not services (no database, no broker) but start the same way: the web
# console, ``python -m console`` (its settings are CONSOLE_...; it owns no business data).
EXTRA_MODULES: Mapping[str, str] = {"console": "console"}

# Tansu (the embedded broker) makes a joining consumer wait about half its session timeout:
# a short session gets a service consuming in seconds instead of tens of seconds.
TANSU_GROUP_TIMING: Mapping[str, str] = {"KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
# Tansu holds a fetch for its whole max wait even when data arrives meanwhile (Kafka answers at
# once): at Kafka's 500 ms that was most of an event's latency through one consumer hop. Each
# held fetch costs the broker CPU too: eight consumers polling every 20 ms kept a third of a
# core busy with nothing to read, and the broker was the largest share of a lead's CPU. So the
# hop a person waits on (nurture's: the e-mail a new lead gets) polls every 20 ms and the
# bookkeeping hops (leads', billing's and retention's reactions) every 100 ms.
TANSU_FETCH_WAIT: Mapping[str, str] = {"KAFKA_FETCH_MAX_WAIT_MS": "100"}
TANSU_FAST_FETCH_WAIT: Mapping[str, str] = {"nurture": "20"}

READY_PATIENCE_S = 90.0
STOP_GRACE_S = 15.0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def migrate(service: str, database_url: str) -> None:
    """Bring ``service``'s database to the newest schema (synchronous; not from a running loop)."""
    upgrade(ROOT / "services" / service / "migrations", database_url)


async def amigrate(service: str, database_url: str) -> None:
    """:func:`migrate` from a running event loop (Alembic's env runs its own loop, in a thread)."""
    await asyncio.to_thread(migrate, service, database_url)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, however it dies (no orphans),
    and leave the terminal's process group, so Ctrl-C reaches the parent only and the parent
    stops the children in order."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


@dataclass(eq=False)  # one process is one instance, whatever its fields say
class Instance:
    """One process of one service. ``name`` (default ``<service>-<index>``) names its log file,
    ``<workdir>/<name>.log``, and the instance in messages."""

    service: str
    index: int = 0
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    # Killed on purpose (``Launcher.kill``) and not yet started again: not a crash.
    down_on_purpose: bool = False

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the process so far; NaN when unknown."""
        if self.process is None:
            return float("nan")
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the instance's log (for an error message)."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-chars:]


class Launcher:
    """Starts, watches and stops the embedded broker and any number of service processes.

    ``env`` is the base environment of every child (default: this process's); ``bootstrap`` a
    broker to use instead of starting one; ``cwd`` the children's working directory (None: this
    process's); ``die_with_parent`` ties each child to this process (SIGTERM when it dies, and a
    process group of its own): spawn from the main thread only, since Linux sends that signal
    when the spawning *thread* ends."""

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        bootstrap: str = "",
        cwd: Path | None = ROOT,
        die_with_parent: bool = False,
    ) -> None:
        self.workdir = workdir
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.bootstrap = bootstrap
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.broker: EmbeddedBroker | None = None
        self.instances: list[Instance] = []
        # A service's own KAFKA_FETCH_MAX_WAIT_MS (TANSU_FAST_FETCH_WAIT on the embedded broker,
        # unless the variable was set by hand); an instance's own variables still win.
        self.fetch_waits: dict[str, str] = {}

    # ------------------------------------------------------------------ broker and topics

    async def start_broker(self, *, port: int | None = None, patience: float = 30.0) -> str:
        """Start the embedded broker (on ``port``, else a free one; its log ``broker.log``),
        wait until it answers Kafka requests; returns its bootstrap address."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(port=port, log_file=self.workdir / "broker.log")
        self.broker = broker  # set before waiting, so stop() ends a broker that never got ready
        await broker.astart(patience)
        self.bootstrap = broker.bootstrap_servers
        return self.bootstrap

    async def create_topics(self, partitions: int) -> list[str]:
        """Every topic and its dead-letter topic (with their retention); returns the ones created now."""
        days = self.env.get("CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS")
        default = ServiceSettings.model_fields["dead_letter_retention_days"].default
        return await ensure_topics(
            self.bootstrap, partitions=partitions, dead_letter_retention_days=int(days) if days else default
        )

    # ------------------------------------------------------------------ processes

    def add(
        self,
        service: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "",
    ) -> Instance:
        """A new instance of ``service`` (not started): numbered after the ones it already has,
        on ``port`` (else a free one), with its own database URL and variables when given."""
        if service not in SERVICE_NAMES and service not in EXTRA_MODULES:
            raise ValueError(f"unknown service {service!r}; services are {', '.join(SERVICE_NAMES)}")
        own = dict(env or {})
        if database_url is not None:
            own[f"{service.upper()}_DATABASE_URL"] = database_url
        instance = Instance(
            service, index=len(self.of(service)), port=port or free_port(host), host=host, env=own, name=name
        )
        instance.log_file = self.workdir / f"{instance.name}.log"
        self.instances.append(instance)
        return instance

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances if i.service == service]

    def child_env(self, instance: Instance) -> dict[str, str]:
        """What the instance's process sees: the base environment, where the broker and the
        data are, its address, no migrating or creating topics itself, then its own variables."""
        prefix = f"{instance.service.upper()}_"
        return {
            **self.env,
            "CLIENTFLOW_DATA_DIR": str(self.workdir.resolve()),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            f"{prefix}HOST": instance.host,
            f"{prefix}PORT": str(instance.port),
            f"{prefix}MIGRATE_ON_START": "false",
            f"{prefix}CREATE_TOPICS_ON_START": "false",
            **(
                {"KAFKA_FETCH_MAX_WAIT_MS": self.fetch_waits[instance.service]}
                if instance.service in self.fetch_waits
                else {}
            ),
            **instance.env,
        }

    def tansu_fetch_waits(self) -> None:
        """The embedded broker's fetch waits (TANSU_FETCH_WAIT, TANSU_FAST_FETCH_WAIT), unless
        KAFKA_FETCH_MAX_WAIT_MS was set by hand."""
        if "KAFKA_FETCH_MAX_WAIT_MS" in self.env:
            return
        self.env.update(TANSU_FETCH_WAIT)
        self.fetch_waits.update(TANSU_FAST_FETCH_WAIT)

    def spawn(self, instance: Instance) -> None:
        """Start the instance's process (output appended to its log); does not wait."""
        if not self.bootstrap:
            raise RuntimeError("no broker: start_broker() first, or give a bootstrap address")
        assert instance.log_file is not None
        instance.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(instance.log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            instance.process = subprocess.Popen(
                [sys.executable, "-m", EXTRA_MODULES.get(instance.service, f"services.{instance.service}")],
                env=self.child_env(instance),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        instance.down_on_purpose = False

    async def wait_ready(self, instance: Instance, patience: float = READY_PATIENCE_S) -> float:
        """Poll ``/health/ready`` until it answers 200; returns the seconds it took. Raises
        RuntimeError when the process exits meanwhile, TimeoutError after ``patience`` seconds."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < patience:
                self._raise_if_exited(instance)
                try:
                    if (await client.get(f"{instance.url}/health/ready")).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{instance.name} not ready after {patience:.0f}s; see {instance.log_file}")

    async def wait_all_ready(
        self,
        instances: Sequence[Instance],
        *,
        patience: float = READY_PATIENCE_S,
        progress: Callable[[list[Instance]], None] | None = None,
    ) -> None:
        """Wait until every one of ``instances`` is ready; ``progress`` hears which are still
        pending whenever one gets ready. The first failure cancels the other waits and is raised."""
        pending = list(instances)
        tasks = {asyncio.ensure_future(self.wait_ready(i, patience)): i for i in instances}
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises the instance's failure
                    pending.remove(tasks.pop(task))
                if progress is not None:
                    progress(pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def start(
        self,
        instances: Iterable[Instance] | None = None,
        *,
        patience: float = READY_PATIENCE_S,
        progress: Callable[[list[Instance]], None] | None = None,
    ) -> None:
        """Spawn ``instances`` (default: every one added and not running) and wait until all
        are ready."""
        chosen = list(instances) if instances is not None else [i for i in self.instances if not i.running]
        for instance in chosen:
            self.spawn(instance)
        await self.wait_all_ready(chosen, patience=patience, progress=progress)

    def kill(self, instance: Instance) -> None:
        """SIGKILL the instance (a crash on purpose, not reported by :meth:`crashed`)."""
        assert instance.process is not None
        instance.down_on_purpose = True
        instance.process.send_signal(signal.SIGKILL)
        instance.process.wait()
        instance.kills += 1

    async def restart(self, instance: Instance, patience: float = READY_PATIENCE_S) -> float:
        """Spawn the instance again; returns the seconds until it was ready."""
        self.spawn(instance)
        return await self.wait_ready(instance, patience)

    # ------------------------------------------------------------------ watching

    def crashed(self) -> Instance | None:
        """The first instance whose process has exited on its own, if any."""
        for instance in self.instances:
            if instance.process is not None and instance.process.poll() is not None and not instance.down_on_purpose:
                return instance
        return None

    def watch(self, until: Callable[[], bool], *, interval: float = 0.3) -> Instance | None:
        """Block until ``until()`` is true (None) or an instance exits on its own (that instance)."""
        while not until():
            crashed = self.crashed()
            if crashed is not None:
                return crashed
            time.sleep(interval)
        return None

    @staticmethod
    def _raise_if_exited(instance: Instance) -> None:
        if instance.process is not None and instance.process.poll() is not None:
            raise RuntimeError(
                f"{instance.name} exited with code {instance.process.returncode}; see {instance.log_file}"
            )

    # ------------------------------------------------------------------ stopping

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM every running instance, SIGKILL those still running after ``grace`` seconds
        (one deadline for all), then stop the embedded broker."""
        for instance in self.instances:
            if instance.running:
                assert instance.process is not None
                instance.process.terminate()
        deadline = time.monotonic() + grace
        for instance in self.instances:
            if instance.process is None:
                continue
            try:
                instance.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait()
        if self.broker is not None:
            self.broker.stop()

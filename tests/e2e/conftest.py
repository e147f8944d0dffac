"""The whole system as ``clientflow run`` starts it: the embedded broker and four processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.crypto import MasterKeys
from shared.embedded import free_port
from tests.support import API_KEY

SERVICES = ("leads", "nurture", "billing", "retention")


@dataclass
class System:
    urls: dict[str, str]
    bootstrap: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    console: str = ""  # the web console's URL

    @property
    def master(self) -> MasterKeys:
        """The master key `clientflow run` gave the services (derived from its saved secret key):
        what a test's topic reader needs to open the personal fields of events."""
        return MasterKeys.derived((self.data_dir / "secret-key").read_text().strip())

    def client(self, service: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.urls[service], headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    data_dir = tmp_path_factory.mktemp("clientflow")
    kafka_port = free_port()
    ports = {name: free_port() for name in SERVICES}
    console_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "CLIENTFLOW_DATA_DIR": str(data_dir),
        "CLIENTFLOW_API_KEY": API_KEY,
        "CLIENTFLOW_KAFKA_PORT": str(kafka_port),
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "CONSOLE_PORT": str(console_port),
        # A busy test machine is not a service that is down (the console's default is 5 s).
        "CONSOLE_SERVICE_TIMEOUT_S": "30",
    }
    # The embedded default, as `make run` has it: one SQLite file per service.
    for name in SERVICES:
        env.pop(f"{name.upper()}_DATABASE_URL", None)
    log = open(data_dir / "run.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "clientflow", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    deadline = time.monotonic() + 120
    while True:
        text = (data_dir / "run.log").read_text(errors="replace")
        if "Clientflow is up" in text:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in data_dir.glob("*.log"))
            raise RuntimeError(f"clientflow run did not come up:\n{logs}")
        time.sleep(0.3)
    children = _children(process.pid)
    try:
        yield System(
            urls=urls,
            bootstrap=f"127.0.0.1:{kafka_port}",
            process=process,
            data_dir=data_dir,
            console=f"http://127.0.0.1:{console_port}",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            log.close()
        # Ctrl-C / SIGTERM leaves no orphan: the broker and the four services are gone.
        time.sleep(0.5)
        alive = [
            pid
            for pid in children
            if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace").lower()
        ]
        assert alive == [], f"processes left behind: {alive}"
        assert process.returncode == 0, (data_dir / "run.log").read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def simulated_system(request: pytest.FixtureRequest) -> Iterator[System]:
    """The ``system`` fixture, started with CLIENTFLOW_CLOCK=simulated (one per test module)."""
    saved = os.environ.get("CLIENTFLOW_CLOCK")
    os.environ["CLIENTFLOW_CLOCK"] = "simulated"
    try:
        yield request.getfixturevalue("system")
    finally:
        if saved is None:
            os.environ.pop("CLIENTFLOW_CLOCK", None)
        else:
            os.environ["CLIENTFLOW_CLOCK"] = saved

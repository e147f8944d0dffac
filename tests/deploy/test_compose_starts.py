"""The compose stack's services start with exactly the command and environment compose gives
them (its anchors, its interpolation of deploy/.env as `make secrets` writes it), with the hosts
mapped to this machine: `kafka` to the embedded broker, `postgres` to the local PostgreSQL (a
`clientflow` role and fresh databases; SQLite when there is none), `mailpit` to a local port.
Each must become healthy, so a setting compose forgets fails here. The one other change: each
service listens on a free port instead of its fixed one, so parallel tests do not collide, and
the producer is not idempotent (the embedded broker lacks it; compose's Kafka has it)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from shared.embedded import free_port
from tests.conftest import _admin

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = ("leads", "nurture", "billing", "retention")
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def env_file() -> dict[str, str]:
    """deploy/.env as `make secrets` writes it: the example with fresh secrets."""
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            # As `make secrets` does: every `change-me` becomes a fresh secret (the master key's too).
            values[key] = value.replace("change-me", secrets.token_urlsafe(32))
    return values


def interpolate(value: str, variables: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise AssertionError(f"compose needs {name}: {rest}")
        return rest or ""

    return _VARIABLE.sub(one, value)


def service_environment(service: dict, variables: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(str(v), variables) for k, v in (service.get("environment") or {}).items()}


@pytest.fixture
def databases(_postgres_server: str | None, tmp_path: Path):
    """Where `postgres:5432` goes: the local server with the role compose's URLs name."""
    if _postgres_server is None:
        yield None, {}
        return
    names = {svc: f"cf_compose_{svc}_{uuid.uuid4().hex[:8]}" for svc in SERVICES}
    password = secrets.token_urlsafe(16)
    asyncio.run(
        _admin(
            _postgres_server,
            "DO $$ BEGIN CREATE ROLE clientflow LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
    )
    asyncio.run(_admin(_postgres_server, f"ALTER ROLE clientflow PASSWORD '{password}'"))
    for name in names.values():
        asyncio.run(_admin(_postgres_server, f'CREATE DATABASE "{name}" OWNER clientflow'))
    try:
        yield make_url(_postgres_server), names | {"password": password}
    finally:
        for name in names.values():
            asyncio.run(_admin(_postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_every_service_starts_healthy_with_the_environment_compose_gives_it(
    kafka_bootstrap: str, databases, tmp_path: Path
) -> None:
    server, names = databases
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    variables = env_file()
    if server is not None:
        variables["POSTGRES_PASSWORD"] = names["password"]
    ports = {svc: free_port() for svc in SERVICES}

    def localise(env: dict[str, str], svc: str | None) -> dict[str, str]:
        out = {}
        for key, value in env.items():
            value = value.replace("kafka:9092", kafka_bootstrap).replace("mailpit", "127.0.0.1")
            if key.endswith("_DATABASE_URL"):
                database = make_url(value).database
                if server is None:
                    value = f"sqlite+aiosqlite:///{tmp_path / database}.db"
                else:
                    value = value.replace("@postgres:5432/", f"@{server.host}:{server.port or 5432}/")
                    value = value.replace(f"/{database}", f"/{names[database]}")
            out[key] = value
        # The embedded broker (Tansu) lacks the idempotent producer that compose's Kafka has.
        if "KAFKA_ENABLE_IDEMPOTENCE" in out:
            out["KAFKA_ENABLE_IDEMPOTENCE"] = "false"
        if svc is not None:
            out[f"{svc.upper()}_PORT"] = str(ports[svc])
        if "NURTURE_SMTP_PORT" in out:
            out["NURTURE_SMTP_PORT"] = str(free_port())
        return out

    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLIENTFLOW_", "KAFKA_", "LEADS_", "NURTURE_", "BILLING_", "RETENTION_"))
    }
    base |= {
        "CLIENTFLOW_DATA_DIR": str(tmp_path / "data"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def run_job(name: str) -> None:
        service = spec["services"][name]
        env = base | localise(service_environment(service, variables), None)
        done = subprocess.run(service["command"], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert done.returncode == 0, f"{name}: {' '.join(service['command'])}\n{done.stdout}\n{done.stderr}"

    run_job("topics")
    for svc in SERVICES:
        run_job(f"migrate-{svc}")
    processes = {}
    try:
        for svc in SERVICES:
            service = spec["services"][svc]
            env = base | localise(service_environment(service, variables), svc)
            assert env["CLIENTFLOW_ENV"] == "production"
            log = open(tmp_path / f"{svc}.log", "wb")  # noqa: SIM115
            processes[svc] = subprocess.Popen(
                service["command"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
            )
        pending = set(SERVICES)
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for svc in list(pending):
                assert processes[svc].poll() is None, f"{svc} exited:\n{(tmp_path / f'{svc}.log').read_text()[-3000:]}"
                try:
                    if httpx.get(f"http://127.0.0.1:{ports[svc]}/health/ready", timeout=2).status_code == 200:
                        pending.discard(svc)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        assert not pending, f"not healthy: {pending}\n" + "\n".join(
            (tmp_path / f"{s}.log").read_text()[-2000:] for s in pending
        )
        # The stack's secrets are in force: the bootstrap key from the env file opens the API.
        key = variables["CLIENTFLOW_API_KEY"]
        assert (
            httpx.get(f"http://127.0.0.1:{ports['leads']}/me", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_the_compose_file_would_refuse_to_start_without_a_secret() -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    variables = env_file()
    del variables["BILLING_WEBHOOK_SECRET"]
    with pytest.raises(AssertionError, match="BILLING_WEBHOOK_SECRET"):
        service_environment(spec["services"]["billing"], variables)

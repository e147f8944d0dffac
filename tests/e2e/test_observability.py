"""Metrics as ops see them: each service's real /metrics passes `promtool check metrics`, every
metric a rule or dashboard names exists, and a real Prometheus scrapes the four services run by
`clientflow run` and evaluates the rules."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from shared.embedded import free_port
from tests.deploy.test_deploy_files import PROMETHEUS, metric_names_used
from tests.support import as_json

pytestmark = pytest.mark.e2e


async def drive_some_traffic(system) -> None:
    async with system.client("leads") as leads:
        body = {
            "name": "Metric Person",
            "email": f"{uuid.uuid4().hex[:8]}@example.org",
            "channel": "seo",
            "consent_marketing": True,
        }
        as_json(await leads.post("/leads", json=body))
        assert (await leads.post("/leads", json={"name": "x"})).status_code == 422


async def scrape(system) -> dict[str, str]:
    out = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in system.urls.items():
            response = await client.get(f"{url}/metrics")
            assert response.status_code == 200
            out[name] = response.text
    return out


async def test_real_metrics_pass_promtool_and_cover_rules_and_dashboards(system) -> None:
    await drive_some_traffic(system)
    outputs = await scrape(system)
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    for name, text in outputs.items():
        result = await asyncio.to_thread(
            subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    exposed = "\n".join(outputs.values())
    missing = sorted(
        m
        for m in metric_names_used()
        if f"# TYPE {m} " not in exposed and f"# TYPE {m.removesuffix('_total')} " not in exposed
    )
    assert missing == [], f"named by rules or dashboards but exposed by no service: {missing}"


async def test_a_real_prometheus_scrapes_the_services_and_evaluates_the_rules(system, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: `make test` installs Debian's prometheus package"
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [url.removeprefix("http://")]}]}
            for name, url in system.urls.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - only starts the server (stopped in `finally`); spawning is instant
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115, ASYNC230 - the child's log, kept open for it
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        await drive_some_traffic(system)
        deadline = time.monotonic() + 60
        up = rules_ok = requests_rate = None
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    up = (await client.get(f"{api}/query", params={"query": "up"})).json()["data"]["result"]
                    groups = (await client.get(f"{api}/rules")).json()["data"]["groups"]
                    rules = [r for g in groups for r in g["rules"]]
                    rules_ok = rules and all(r["health"] == "ok" and r["lastEvaluation"][:4] != "0001" for r in rules)
                    requests_rate = (
                        await client.get(f"{api}/query", params={"query": "clientflow:http_requests:rate5m"})
                    ).json()["data"]["result"]
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                rated = {s["metric"].get("service") for s in requests_rate or []}
                if up and len(up) == 4 and all(s["value"][1] == "1" for s in up) and rules_ok and "leads" in rated:
                    break
                await asyncio.sleep(1)
        assert up and sorted(s["metric"]["job"] for s in up if s["value"][1] == "1") == sorted(system.urls)
        assert rules_ok, "every recording and alerting rule evaluated without error"
        assert {s["metric"]["service"] for s in requests_rate} >= {"leads"}
    finally:
        process.terminate()
        process.wait(10)

"""``clientflow simulate`` against ``clientflow run`` on the simulated clock: two months of an
agency through the public HTTP APIs, ending with retention's economics and the checks that
the services agree (every won deal has its deposit invoice, every churned client is churned
in leads and billing)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.conftest import System
from tests.support import API_KEY

pytestmark = pytest.mark.e2e


def test_two_months_of_an_agency(simulated_system: System) -> None:
    system = simulated_system
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "BILLING_WEBHOOK_SECRET")}
    # The API key from the environment, the webhook secret from the file `clientflow run` saved.
    env |= {"CLIENTFLOW_API_KEY": API_KEY, "CLIENTFLOW_DATA_DIR": str(system.data_dir), "COLUMNS": "200"}
    command = [
        sys.executable,
        "-m",
        "clientflow",
        "simulate",
        "--months",
        "2",
        "--seed",
        "7",
        "--leads-per-month",
        "15",
        "--bootstrap",
        system.bootstrap,
        *(arg for name in ("leads", "nurture", "billing", "retention") for arg in (f"--{name}-url", system.urls[name])),
    ]
    started = time.monotonic()
    # Two simulated months take about 75 s on a quiet machine, twice that beside the other tests.
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "Do the services agree?" in out, out[-4000:]
    checks = out.split("Do the services agree?", 1)[1]
    assert " failed" not in checks, checks
    for check in (
        "every won deal has exactly one deposit invoice in billing",
        "every churned client is `churned` in leads",
        "no signed webhook was refused",
        "every lead has an owner (none left in the pool)",
        "each rep's commission is the plan applied to what billing says was paid",
    ):
        assert check in out
    # The sales team's figures, three reps and the account owner (Arif speaks Bengali).
    assert "The sales team" in out and all(f"{name} (" in out for name in ("Rina", "Arif", "Tom", "Sara")), out[-4000:]
    assert "Economics" in out and "LTV:CAC" in out
    assert took < 100, f"simulate took {took:.0f}s"

    # The e-mails' links point where nurture really listens (clientflow run sets its public URL).
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as http:
        leads = http.get(f"{system.urls['leads']}/leads", params={"limit": 5}).json()["items"]
        assert len(leads) == 5
        messages = http.get(f"{system.urls['nurture']}/leads/{leads[0]['lead_id']}/messages").json()
        assert messages and messages[0]["open_url"].startswith(f"{system.urls['nurture']}/t/o/")
        # Every service follows the simulated clock, now two months on.
        for url in system.urls.values():
            clock = http.get(f"{url}/health/ready").json()["clock"]
            assert clock["kind"] == "simulated"
            assert datetime.fromisoformat(clock["now"]) > datetime.now(UTC) + timedelta(days=55)

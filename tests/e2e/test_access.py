"""Access across the whole system as `clientflow run` starts it: people added with `clientflow
users add` (one per role) reach exactly what the permission table allows on all four services,
the audit trail names who wrote, and disabling a person or revoking a token locks them out
everywhere within 5 seconds (the people topic on the real broker carries it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from clientflow.cli import build_apps
from shared.access.rules import route_table
from shared.events import ROLES
from tests.support import API_KEY

pytestmark = pytest.mark.e2e
TOKEN = re.compile(r"^cf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def cli(system, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CLIENTFLOW_DATA_DIR": str(system.data_dir), "CLIENTFLOW_API_KEY": API_KEY, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "clientflow", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def add(system, email: str, role: str, *extra: str) -> str:
    done = cli(
        system, "users", "add", email, "--name", f"Person {role}", "--role", role, "--languages", "en,bn", *extra
    )
    token = done.stdout.strip().splitlines()[-1]
    assert TOKEN.match(token), done.stdout
    return token


def _url(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: str(uuid.uuid4()) if m.group(1).endswith("id") else "x", path)


def locked_out_everywhere(system, token: str, timeout: float = 5.0) -> float:
    """Seconds until every service answers 401 to ``token`` (fails past ``timeout``)."""
    started = time.monotonic()
    pending = set(system.urls)
    while pending:
        for name in list(pending):
            if (
                httpx.get(
                    f"{system.urls[name]}/me", headers={"Authorization": f"Bearer {token}"}, timeout=5
                ).status_code
                == 401
            ):
                pending.discard(name)
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"still accepted after {elapsed:.1f} s by {sorted(pending)}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_people_roles_tokens_and_audit_across_the_system(system) -> None:
    emails = {role: f"{role}-{uuid.uuid4().hex[:6]}@agency.example" for role in ROLES}
    tokens = {role: add(system, emails[role], role) for role in ROLES}

    # Every route of every service x every role x no token, against the running processes.
    apps = build_apps()
    wrong: list[str] = []
    calls = 0
    with httpx.Client(timeout=30) as http:
        for service, app in apps.items():
            for route, rule in route_table(app):
                if rule.public or rule.optional:
                    continue
                for method in sorted(route.methods):
                    url = system.urls[service] + _url(route.path)
                    body = {} if method in {"POST", "PUT", "PATCH"} else None
                    if http.request(method, url, json=body).status_code != 401:
                        wrong.append(f"{service} {method} {route.path}: no token, not 401")
                    for role, token in tokens.items():
                        status = http.request(
                            method, url, json=body, headers={"Authorization": f"Bearer {token}"}
                        ).status_code
                        calls += 2
                        allowed = role in rule.permission.roles
                        if allowed == (status in (401, 403)):
                            wrong.append(f"{service} {method} {route.path}: {role} got {status} (allowed: {allowed})")
    assert not wrong, "\n".join(wrong)
    assert calls > 400

    # Who wrote is in the audit trail, and in the event the write caused.
    sales = {"Authorization": f"Bearer {tokens['sales']}"}
    me = httpx.get(f"{system.urls['leads']}/me", headers=sales).json()
    assert me["actor"]["role"] == "sales" and me["languages"] == ["en", "bn"]
    lead = httpx.post(
        f"{system.urls['leads']}/leads",
        headers=sales,
        json={
            "name": "Ada",
            "email": f"ada-{uuid.uuid4().hex[:6]}@shop.example",
            "channel": "website",
        },
    ).json()["lead_id"]
    admin = {"Authorization": f"Bearer {tokens['admin']}"}

    def audited() -> list[dict]:
        items = httpx.get(f"{system.urls['leads']}/audit", params={"lead_id": lead}, headers=admin).json()["items"]
        return [i for i in items if i["action"] != "GET /audit"]  # reading the trail about a person is audited too

    deadline = time.monotonic() + 5
    while not audited() and time.monotonic() < deadline:
        time.sleep(0.05)
    (row,) = audited()
    assert (row["action"], row["actor"]["id"], row["outcome"]) == ("POST /leads", me["actor"]["id"], "ok")
    assert httpx.get(f"{system.urls['billing']}/audit", headers=sales).status_code == 403

    # Listed by the command line.
    listed = cli(system, "users", "list").stdout
    assert all(emails[role] in listed for role in ROLES), listed

    # Disabling a person locks them out of every service within 5 seconds.
    cli(system, "users", "disable", emails["sales"])
    took_disable = locked_out_everywhere(system, tokens["sales"])

    # A token made and revoked with the command line: accepted everywhere, then refused everywhere.
    made = cli(system, "tokens", "create", emails["finance"], "--expires", "90d")
    token = made.stdout.strip().splitlines()[-1]
    assert TOKEN.match(token)
    for url in system.urls.values():
        assert httpx.get(f"{url}/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    cli(system, "tokens", "revoke", token[:15])
    took_revoke = locked_out_everywhere(system, token)
    # The other finance token still works: revoking one token is not disabling the person.
    assert (
        httpx.get(f"{system.urls['billing']}/me", headers={"Authorization": f"Bearer {tokens['finance']}"}).status_code
        == 200
    )
    print(
        f"\nlocked out everywhere after disabling: {took_disable:.2f} s; after revoking: {took_revoke:.2f} s; {calls} matrix calls"
    )

"""The permission matrix, generated from each service's route table: every route x every role
x no token. A route without a rule fails here; so does a route whose answer does not follow the
table in shared/access/policy.py (401 without a token, 403 for a role that may not, and for a
role that may, an answer from the route itself)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from shared.access.rules import route_table
from shared.events import ROLES
from tests.access.support import build_app, migrate, one_per_role

SERVICES = ["leads", "nurture", "billing", "retention"]
FORBIDDEN_MESSAGE = re.compile(r"may not|limited to")


def _url(path: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(uuid.uuid4()) if name.endswith("id") else "x"

    return re.sub(r"\{([^}]+)\}", fill, path)


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_has_an_access_rule(service: str) -> None:
    app = build_app(service, "sqlite+aiosqlite:///:memory:")
    missing = [f"{sorted(r.methods)} {r.path}" for r, rule in route_table(app) if rule is None]
    assert not missing, f"routes without need(...) or public(): {missing}"
    assert len(route_table(app)) > 10


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_answers_every_role_as_the_table_says(service: str, tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / service}.db"
    await migrate(service, url)
    app = build_app(service, url)
    runtime = app.state.runtime
    tokens = await one_per_role(runtime.uow.sessions)
    wrong: list[str] = []
    checked = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", timeout=30) as http:
        for route, rule in route_table(app):
            if route.path == "/health/ready":
                continue  # asks the broker, which these tests do not start
            for method in sorted(route.methods):
                path = _url(route.path)
                body = {} if method in {"POST", "PUT", "PATCH"} else None
                anonymous = await http.request(method, path, json=body)
                checked += 1
                if rule.public:
                    if anonymous.status_code in (401, 403):
                        wrong.append(f"{method} {route.path}: public, but {anonymous.status_code} without a token")
                    continue
                if rule.optional:
                    # The route decides by its body: an empty one carries neither the e-mail's
                    # token nor a provider's signature, so it is refused, never served.
                    if anonymous.status_code not in (400, 401, 422):
                        wrong.append(f"{method} {route.path}: {anonymous.status_code} without a token or signature")
                elif anonymous.status_code != 401:
                    wrong.append(f"{method} {route.path}: {anonymous.status_code} without a token, not 401")
                elif anonymous.headers.get("www-authenticate", "").lower().startswith("bearer") is False:
                    wrong.append(f"{method} {route.path}: 401 without WWW-Authenticate: Bearer")
                for who, token in tokens.items():
                    role = "admin" if who == "bootstrap" else who
                    answer = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                    checked += 1
                    allowed = role in rule.permission.roles
                    if allowed and answer.status_code in (401, 403):
                        wrong.append(
                            f"{method} {route.path}: {who} may ({rule.permission.name}) but got {answer.status_code} {answer.text[:120]}"
                        )
                    if not allowed and answer.status_code != 403:
                        wrong.append(
                            f"{method} {route.path}: {who} may not ({rule.permission.name}) but got {answer.status_code}"
                        )
                    if (
                        not allowed
                        and answer.status_code == 403
                        and not FORBIDDEN_MESSAGE.search(answer.json()["detail"])
                    ):
                        wrong.append(f"{method} {route.path}: 403 without saying why: {answer.text[:120]}")
    await runtime.audit.flush()
    await runtime.engine.dispose()
    assert not wrong, "\n".join(wrong)
    assert checked > 50


async def test_a_viewer_reads_aggregates_and_never_a_person(tmp_path) -> None:
    """The viewer's whole reach, service by service: reports and itself, nothing that names a person."""
    reach: dict[str, set[str]] = {}
    for service in SERVICES:
        app = build_app(service, "sqlite+aiosqlite:///:memory:")
        reach[service] = {
            f"{sorted(r.methods)[0]} {r.path}"
            for r, rule in route_table(app)
            if rule is not None and rule.permission is not None and "viewer" in rule.permission.roles
        }
    assert reach == {
        "leads": {"GET /funnel", "GET /channels", "GET /me"},
        "nurture": {"GET /me"},
        "billing": {"GET /reports/summary", "GET /me"},
        "retention": {"GET /economics", "GET /exchange-rates", "GET /me"},  # rates name no one
    }


def test_roles_are_the_contract() -> None:
    assert ROLES == ("admin", "sales", "finance", "success", "viewer")

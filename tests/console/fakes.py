"""The four services as the console sees them, answered in-process (httpx.MockTransport): who a
token is (from the real permission table), a lead with a deal, and a record of every call."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient

from console.app import create_app
from console.settings import Settings
from shared.access.policy import permissions

HOSTS = {"leads": "leads.test", "nurture": "nurture.test", "billing": "billing.test", "retention": "retention.test"}
LEAD_ID = "9e382275-ae12-4126-9019-72621c6aa864"
DEAL_ID = "0bc7e9ba-4d71-4bad-9dd1-6910da014f76"
INVOICE_ID = "804e1c7b-3db4-4c75-8665-a2c94c0efa49"


def me(role: str, *, name: str = "Pat", languages: tuple[str, ...] = ("en",)) -> dict[str, Any]:
    held = sorted(n for n, p in permissions().items() if role in p.roles)
    return {
        "actor": {"kind": "person", "id": str(uuid.uuid4()), "role": role},
        "name": name,
        "email": f"{role}@agency.example",
        "via": "token",
        "scopes": [],
        "permissions": held,
        "languages": list(languages),
    }


LEAD: dict[str, Any] = {
    "lead_id": LEAD_ID,
    "name": "Grace Hopper",
    "company": "Hopper Compilers",
    "email": "grace@hopper.example",
    "channel": "referral",
    "stage": "decision",
    "fit_score": 85,
    "fit_matched": ["industry"],
    "fit_missed": ["annual_revenue"],
    "red_flags": [
        {"name": "tiny_budget", "evidence": "budget 500 < 1000", "source": "rules", "at": "2026-12-01T10:00:00Z"}
    ],
    "qualification": {"budget": True, "authority": None, "need": True, "timeline": False},
    "tier": None,
    "created_at": "2026-12-01T10:00:00Z",
    "erased": False,
    "currency": "USD",
    "activity": [{"type": "lead.captured", "at": "2026-12-01T10:00:00Z", "detail": {"channel": "referral"}}],
    "deals": [DEAL_ID],
    "owner_id": None,
}
DEAL: dict[str, Any] = {
    "deal_id": DEAL_ID,
    "lead_id": LEAD_ID,
    "title": "Content retainer",
    "kind": "retainer",
    "status": "proposed",
    "currency": "USD",
    "total": "6000",
    "monthly_fee": "3000",
    "lines": [{"description": "SEO", "hours": None, "amount": "3000"}],
    "change_requests": [],
    "version": 1,
}
INVOICE: dict[str, Any] = {
    "invoice_id": INVOICE_ID,
    "number": "2026-000001",
    "kind": "deposit",
    "status": "open",
    "lead_id": LEAD_ID,
    "deal_id": DEAL_ID,
    "subscription_id": None,
    "currency": "USD",
    "amount": "900.00",
    "amount_due": "900.00",
    "issued_at": "2026-12-01T10:00:00Z",
    "due_at": "2026-12-08T10:00:00Z",
    "payments": [],
}


@dataclass
class Services:
    """Answers by (service, method, path); ``tokens`` says who each bearer token is; ``down``
    lists services that refuse connections; ``calls`` records what the console asked."""

    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str, str, Any]] = field(default_factory=list)
    overrides: dict[tuple[str, str, str], Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)

    def writes(self) -> list[tuple[str, str, str]]:
        return [(s, m, p) for s, m, p, _t, _b in self.calls if m != "GET"]

    def handler(self, request: httpx.Request) -> httpx.Response:
        service = next((s for s, h in HOSTS.items() if h == request.url.host), request.url.host)
        if service in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = json.loads(request.content) if request.content else None
        self.calls.append((service, request.method, request.url.path, token, body))
        custom = self.overrides.get((service, request.method, request.url.path))
        if custom is not None:
            return custom(request)
        who = self.tokens.get(token)
        if who is None:
            return httpx.Response(401, json={"detail": "no token, or an invalid one"})
        return self.answer(service, request.method, request.url.path, request.url.params)

    def answer(self, service: str, method: str, path: str, params: httpx.QueryParams) -> httpx.Response:
        if path == "/me":
            return httpx.Response(200, json=self.tokens[self.calls[-1][3]])
        if method != "GET":
            return httpx.Response(200, json={"ok": True, "cancellation_id": str(uuid.uuid4())})
        routes: dict[tuple[str, str], Any] = {
            ("leads", "/funnel"): {"total": 1, "stages": {"decision": 1}, "overall_conversion": "0.5"},
            ("leads", "/leads"): {"items": [LEAD], "total": 1, "limit": 500, "offset": 0},
            ("leads", "/channels"): [{"channel": "referral"}],
            ("leads", "/team/reps"): [],
            ("leads", "/people"): [],
            ("leads", f"/leads/{LEAD_ID}"): LEAD,
            ("leads", f"/deals/{DEAL_ID}"): DEAL,
            ("nurture", f"/leads/{LEAD_ID}/messages"): [],
            ("billing", "/invoices"): [INVOICE],
            ("billing", "/subscriptions"): [],
            ("retention", "/clients"): {"items": [], "total": 0, "limit": 500, "offset": 0},
            ("nurture", "/tasks"): [],
            ("nurture", "/sequences"): [],
        }
        if (service, path) in routes:
            return httpx.Response(200, json=routes[(service, path)])
        if re.fullmatch(r"/leads/[^/]+", path) or path.startswith("/clients/") or path.endswith("/takeover"):
            return httpx.Response(404, json={"detail": f"{path} not found"})
        if path == "/economics":
            return httpx.Response(404, json={"detail": "no figures"})
        if path == "/reviews/latest":
            return httpx.Response(404, json={"detail": "no tier review has run yet"})
        return httpx.Response(404, json={"detail": f"nothing at {path}"})


def settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {f"{name}_url": f"http://{host}" for name, host in HOSTS.items()}
    return Settings(**(base | changes))


def console(services: Services, **changes: Any) -> TestClient:
    app = create_app(settings(**changes), transport=httpx.MockTransport(services.handler))
    return TestClient(app, base_url="http://console.test", follow_redirects=False)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def signed_in(services: Services, role: str, **me_changes: Any) -> tuple[TestClient, str]:
    """A console client signed in as a person of ``role``; returns it and the CSRF token."""
    token = f"token-{role}-{uuid.uuid4().hex[:6]}"
    services.tokens[token] = me(role, **me_changes)
    client = console(services)
    client.__enter__()
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/pipeline"})
    assert answer.status_code == 303, answer.text
    return client, csrf_of(client.get("/pipeline").text)

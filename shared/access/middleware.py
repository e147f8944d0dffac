"""The first thing every request meets (after the request metrics): who is calling (401, or
429 for an address that keeps guessing), may their role do this (403), and the audit row
afterwards. Only then do the body limit, the Idempotency-Key and the route see the request."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.access.audit import AuditLog, outcome_of
from shared.access.authn import Authenticator, Lockout
from shared.access.context import CURRENT_ACTOR
from shared.access.policy import METRICS_READ, may
from shared.access.principal import Principal, Refusal, token_hash
from shared.access.rules import Rule, refusal, route_table
from shared.metrics import PlumbingMetrics

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The service's own documents carry no personal data.
_DOCS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# A caller's X-Request-ID is kept in the append-only audit trail, so only an id that cannot
# carry a name (hex and dashes: a UUID, a trace id) is taken; anything else gets a new one.
_REQUEST_ID = re.compile(r"^[0-9A-Fa-f-]{8,64}$")
_MAX_CAPTURE = 1 << 20
# A route whose answer cannot name its person (a download) names them in ``request.state``.
AUDIT_LEAD_ID = "audit_lead_id"


async def answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        authenticator: Authenticator,
        lockout: Lockout,
        audit: AuditLog,
        metrics: PlumbingMetrics,
        protect_metrics: bool = False,
        trust_forwarded_for: bool = False,
    ) -> None:
        self.app = app
        self.service = service
        self.authenticator = authenticator
        self.lockout = lockout
        self.audit = audit
        self.metrics = metrics
        self.protect_metrics = protect_metrics
        self.trust_forwarded_for = trust_forwarded_for
        self._table: list[tuple[APIRoute, Rule | None]] | None = None
        # The audit counter's child by outcome: ``labels()`` on every audited request was a
        # lookup under a lock (four outcomes, looked up once each).
        self._audit_rows: dict[str, Any] = {}

    # ------------------------------------------------------------------ routes

    def _match(self, scope: Scope) -> tuple[APIRoute | None, Rule | None, dict[str, Any]]:
        if self._table is None:
            self._table = route_table(scope["app"])
        for route, rule in self._table:
            matched, child = route.matches(scope)
            if matched is Match.FULL:
                return route, rule, child.get("path_params", {})
        return None, None, {}

    # ------------------------------------------------------------------ the request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, rule, path_params = self._match(scope)
        if route is not None:
            scope["route"] = route  # request metrics label refusals by route too
        if route is None and scope["path"] in _DOCS:
            return await self.app(scope, receive, send)
        if rule is not None and rule.public:
            if route is not None and route.path == "/metrics" and self.protect_metrics:
                rule = Rule(METRICS_READ)
            else:
                return await self.app(scope, receive, send)

        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID.match(request_id):
            request_id = str(uuid.uuid4())
        token = _bearer(headers.get(b"authorization"))
        address = self._address(scope, headers)

        principal: Principal | None = None
        if token is None:
            if rule is None or not rule.optional:
                self.metrics.auth_failures.labels(self.service, "missing").inc()
                return await answer(
                    send,
                    401,
                    "missing token: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer", "X-Request-ID": request_id},
                )
        else:
            digest = token_hash(token)
            wait = self.lockout.retry_after(address, digest)
            if wait is not None:
                self.metrics.auth_failures.labels(self.service, "locked").inc()
                return await answer(
                    send,
                    429,
                    f"too many bad tokens from this address; try again in {wait} s",
                    {"Retry-After": str(wait), "X-Request-ID": request_id},
                )
            found = await self.authenticator.authenticate(token, digest)
            if isinstance(found, Refusal):
                self.lockout.failed(address)
                self.metrics.auth_failures.labels(self.service, found.reason).inc()
                return await answer(
                    send,
                    401,
                    found.message,
                    {"WWW-Authenticate": 'Bearer error="invalid_token"', "X-Request-ID": request_id},
                )
            self.lockout.succeeded(address, digest)
            principal = found

        method = scope["method"]
        action = f"{method} {route.path}" if route is not None else f"{method} (no route)"
        audited = route is not None and (
            method in WRITE_METHODS
            or (rule is not None and rule.person)
            or "lead_id" in path_params
            or b"lead_id=" in scope.get("query_string", b"")
        )
        if principal is not None and rule is not None and rule.permission is not None:
            if not may(principal.role, rule.permission, principal.scopes):
                self.metrics.auth_failures.labels(self.service, "forbidden").inc()
                if audited:
                    self._record(principal, action, _lead(path_params, scope, None), request_id, 403)
                return await answer(send, 403, refusal(principal, rule.permission), {"X-Request-ID": request_id})
        elif principal is not None and route is not None and rule is None:
            # A route nobody gave a rule is nobody's: refused, and the matrix test fails.
            return await answer(send, 403, f"{action} has no access rule", {"X-Request-ID": request_id})

        scope.setdefault("state", {})["principal"] = principal
        status = 500
        captured: list[bytes] = []
        capture = audited and principal is not None and _lead(path_params, scope, None) is None
        request_id_header = (b"x-request-id", request_id.encode())

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = dict(message)
                message["headers"] = [*message.get("headers", []), request_id_header]
            elif capture and message["type"] == "http.response.body" and sum(map(len, captured)) < _MAX_CAPTURE:
                captured.append(message.get("body", b""))
            await send(message)

        token_var = CURRENT_ACTOR.set(principal.actor if principal is not None else None)
        try:
            await self.app(scope, receive, observed)
        finally:
            CURRENT_ACTOR.reset(token_var)
            if audited and principal is not None:
                self._record(principal, action, _lead(path_params, scope, captured), request_id, status)

    def _record(
        self, principal: Principal, action: str, lead_id: uuid.UUID | None, request_id: str, status: int
    ) -> None:
        self.audit.record(
            at=datetime.now(UTC),
            actor=principal.actor,
            action=action,
            lead_id=lead_id,
            request_id=request_id,
            status=status,
        )
        outcome = outcome_of(status)
        counter = self._audit_rows.get(outcome)
        if counter is None:
            counter = self._audit_rows[outcome] = self.metrics.audit_rows.labels(self.service, outcome)
        counter.inc()

    def _address(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        if self.trust_forwarded_for:
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")[0].strip()
            if forwarded:
                return forwarded
        client = scope.get("client")
        return client[0] if client else "unknown"


def _bearer(header: bytes | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.decode("latin-1").partition(" ")
    value = value.strip()
    # Only a Bearer token counts ("Basic <key>" is no token at all).
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def _lead(path_params: dict[str, Any], scope: Scope, captured: list[bytes] | None) -> uuid.UUID | None:
    """The person a request is about: in its path, its query, named by the route
    (``AUDIT_LEAD_ID`` in ``request.state``), or the answer's ``lead_id``."""
    if "lead_id" in path_params:
        return _uuid(path_params["lead_id"])
    named = scope.get("state", {}).get(AUDIT_LEAD_ID)
    if named is not None:
        return _uuid(named)
    query = scope.get("query_string", b"")
    if b"lead_id=" in query:
        values = parse_qs(query.decode("latin-1")).get("lead_id")
        if values:
            return _uuid(values[0])
    if captured:
        try:
            body = json.loads(b"".join(captured))
        except ValueError:
            return None
        if isinstance(body, dict):
            return _uuid(body.get("lead_id"))
    return None

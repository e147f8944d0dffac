"""HTTP plumbing every service shares: access (tokens, roles, audit), Idempotency-Key, body
limit, health, metrics and the mapping of domain errors to clear 4xx answers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.access.audit import AuditLog
from shared.access.authn import Authenticator, Lockout
from shared.access.middleware import AccessMiddleware
from shared.access.middleware import answer as _json  # one Error answer for every middleware
from shared.access.rules import public
from shared.db import IdempotencyKeyRow
from shared.errors import DomainError
from shared.metrics import PlumbingMetrics
from shared.uow import REQUEST_TRANSACTION, RequestTransaction

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, before anything reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _json(send, 413, f"body larger than {self.max_bytes} bytes")
        seen = 0
        exceeded = started = False

        async def limited() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                raise _TooLarge
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            # A body parser that catches the refusal answers 400 ("error parsing the body"):
            # that answer is dropped, the client gets the 413 below.
            if exceeded and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited, answer)
        if exceeded and not started:
            await _json(send, 413, f"body larger than {self.max_bytes} bytes")


class _TooLarge(Exception):
    pass


MAX_JSON_DEPTH = 64
# A UTF-16 surrogate written as a JSON escape, or as the bytes CESU-8 gives it (json.loads
# takes both). Pairs match too: the parsed text tells a lone one from a pair.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# NUL in text: valid JSON, but PostgreSQL's text refuses it (a 500 when stored).
_NUL_ESCAPE = re.compile(rb"\\u0000")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _deeper_than(text: bytes, limit: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``limit``: its brackets outside strings,
    innermost pairs peeled off ``limit`` times (C-speed passes, no walk in Python)."""
    brackets = _JSON_STRING.sub(b"", text).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


class JsonGuardMiddleware:
    """Refuses with 422, naming the field, a JSON body nested deeper than ``max_depth`` or with
    a lone UTF-16 surrogate or a NUL in a string, before any route or body parser reads it.

    Nested 10,000 deep, a body raised RecursionError in a route that parses it itself (a
    500); a few hundred deep, the validation error's echo of it could still overflow the
    encoder. A lone surrogate (``"\\ud800"``) is valid JSON but not Unicode: nothing can
    encode it again, so the echo of it in a 422, or its row, was a 500.

    Cheap on ordinary bodies: one with at most ``max_depth`` brackets cannot be too deep and
    one without a surrogate escape has none, so nothing is parsed. Otherwise the body is
    parsed once here by the C parser (whose RecursionError is itself the answer), and only a
    refused body is looked at field by field. A body that is not JSON goes on untouched, for
    the route to refuse or to read as what it is (CSV, YAML, a form).
    """

    def __init__(self, app: ASGIApp, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        refusal = self.refusal(body)
        if refusal is None:
            return await self.app(scope, _replay_then(body, receive), send)
        answer = json.dumps({"detail": [refusal]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 422, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def refusal(self, body: bytes) -> dict[str, Any] | None:
        """The error (FastAPI's shape: type, loc, msg) ``body`` is refused with, or None."""
        deep = body.count(b"[") + body.count(b"{") > self.max_depth
        odd = _SURROGATE.search(body) is not None
        nul = _NUL_ESCAPE.search(body) is not None
        if not (deep or odd or nul):
            return None
        too_deep = {"type": "json_too_deep", "msg": f"JSON nested deeper than {self.max_depth} levels"}
        try:
            document = json.loads(body)
        except RecursionError:
            return {**too_deep, "loc": _deep_member(body)}
        except ValueError:
            return None
        if deep and _deeper_than(body, self.max_depth):

            def too_deep_in(part: str) -> bool:
                return _deeper_than(part.encode("utf-8", "surrogatepass"), self.max_depth)

            return {**too_deep, "loc": _field(document, too_deep_in)}
        if odd and _LONE_SURROGATE.search(json.dumps(document, ensure_ascii=False)):
            return {
                "type": "string_unicode",
                "msg": "text with a lone UTF-16 surrogate (\\ud800-\\udfff): not Unicode",
                "loc": _field(document, _LONE_SURROGATE.search),
            }
        if nul and _has_nul(document):
            return {
                "type": "string_nul",
                "msg": "text with a NUL character (\\u0000)",
                "loc": _field(document, lambda text: _has_nul(json.loads(text))),
            }
        return None


def _deep_member(body: bytes) -> list[str | int]:
    """``["body", name]`` of the top-level member too deep to parse, read member by member (each
    value by the C parser), else ``["body"]``."""
    decoder = json.JSONDecoder()
    try:
        text = body.decode("utf-8", "surrogatepass")
        at = _past_space(text, 0)
        if text[at] != "{":
            return ["body"]
        at += 1
        while True:
            at = _past_space(text, at)
            if text[at] != '"':
                return ["body"]
            key, at = decoder.raw_decode(text, at)  # a string: exactly json's own scanstring
            at = _past_space(text, at) + 1  # past the colon
            try:
                _, at = decoder.raw_decode(text, _past_space(text, at))
            except RecursionError:
                return ["body", _LONE_SURROGATE.sub("\ufffd", key)]
            at = _past_space(text, at)
            if text[at] != ",":
                return ["body"]
            at += 1
    except (ValueError, IndexError):
        return ["body"]


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # what json.decoder skips between tokens


def _past_space(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    return match.end() if match else at


def _field(document: Any, bad: Callable[[str], object]) -> list[str | int]:
    """``["body", name]`` of the top-level field whose JSON text is ``bad``, else ``["body"]``."""
    if isinstance(document, dict):
        for key, value in document.items():
            try:
                if bad(json.dumps({key: value}, ensure_ascii=False)):
                    return ["body", _LONE_SURROGATE.sub("\ufffd", key)]
            except RecursionError:
                return ["body", _LONE_SURROGATE.sub("\ufffd", key)]
    return ["body"]


def _replay_then(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the client sends next (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class ObserveMiddleware:
    """Counts and times every request by route template and status. A plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``) streams each answer through an
    extra task and was a visible share of a request's cost in the benchmark's profile."""

    def __init__(self, app: ASGIApp, metrics: PlumbingMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # The metrics' children by (method, route, status): ``labels()`` checks, converts and
        # looks its labels up under a lock on every call; the set of routes is small and fixed.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            # The router records the matched route in the scope it shares with us.
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            children = self._children.get((method, path, status))
            if children is None:
                children = self._children[(method, path, status)] = self._labelled(method, path, status)
            children[0].inc()
            children[1].observe(time.perf_counter() - started)

    def _labelled(self, method: str, path: str, status: int) -> tuple[Any, Any]:
        metrics = self.metrics
        return (
            metrics.http_requests.labels(metrics.service, method, path, str(status)),
            metrics.http_seconds.labels(metrics.service, method, path),
        )


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AdmissionMiddleware:
    """Past its capacity a service refuses the excess at once instead of queueing it: at most
    ``max_writes`` writes are in progress; one more gets 503 with ``Retry-After`` before any work
    (nothing stored, so a retry with the same Idempotency-Key runs for real). Reads, health and
    metrics are never refused here. Without it an overload made every request slower (each
    waited behind all the others for the one SQLite writer and the event loop) until the whole
    pipeline collapsed; with it the accepted writes keep their latency and the rest are told
    when to come back."""

    def __init__(self, app: ASGIApp, *, metrics: PlumbingMetrics, max_writes: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.metrics = metrics
        self.max_writes = max_writes
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_writes:
            self.metrics.http_shed.labels(self.metrics.service).inc()
            body = json.dumps(
                {
                    "detail": f"busy: {self.in_flight} writes are in progress here; "
                    f"nothing was done, retry after {self.retry_after_s} s with the same Idempotency-Key"
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(self.retry_after_s).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return None
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


IDEMPOTENCY_TTL = timedelta(hours=24)

_KEYS = cast(Table, IdempotencyKeyRow.__table__)
# Built once, with their cache keys (each was built anew for every write). The key's row is
# written and finished with Core statements: nothing reads it back as an object in the request.
_ANSWERED = select(IdempotencyKeyRow).where(IdempotencyKeyRow.key == bindparam("key"))
_CLAIM = insert(_KEYS)
# The same, doing nothing where the key is stored already: a new key (the usual write) is
# claimed in one statement, and only a key seen before is read (was: a read on every write).
_CLAIM_IF_NEW = {
    "sqlite": sqlite.insert(_KEYS).on_conflict_do_nothing(index_elements=[_KEYS.c.key]),
    "postgresql": postgresql.insert(_KEYS).on_conflict_do_nothing(index_elements=[_KEYS.c.key]),
}
_FINISH = (
    update(_KEYS)
    .where(_KEYS.c.key == bindparam("the_key"))
    .values(
        state=bindparam("the_state"),
        status_code=bindparam("the_status"),
        response_body=bindparam("the_body"),
        response_headers=bindparam("the_headers"),
    )
)

_UNKNOWN = object()

# Answers that say nothing about the request itself are not kept: a retry after fixing the
# key or after a server error must run for real (Stripe keeps neither).
_NOT_KEPT = {401, 403, 429}


class IdempotencyMiddleware:
    """``Idempotency-Key`` on writes: a repeat returns the first answer; the same key with a
    different request is refused with 409, as Stripe does."""

    def __init__(self, app: ASGIApp, sessions: async_sessionmaker, clock: Any, ttl: timedelta) -> None:
        self.app = app
        self.sessions = sessions
        self.clock = clock
        self.ttl = ttl
        self._claim_if_new: Any = _UNKNOWN  # the database's insert-or-nothing, once known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        key = dict(scope["headers"]).get(b"idempotency-key")
        principal = scope.get("state", {}).get("principal")
        # Public routes (signed webhooks) are idempotent by their own event ids: a key there
        # would let anybody claim it before the provider sends its request.
        if not key or principal is None:
            return await self.app(scope, receive, send)
        given = key.decode("latin-1").strip()
        if not 1 <= len(given) <= 255:
            return await _json(send, 400, "Idempotency-Key must be 1 to 255 characters")
        # Keys belong to their caller, as Stripe's belong to an account: nobody else can replay,
        # probe or claim them.
        key_text = f"{principal.idempotency_owner}:{given}"
        body = await _read_body(receive)
        digest = hashlib.sha256(
            b"\n".join([scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()

        # The key is looked up and written in the request's own transaction, which every unit of work of the
        # request joins and which commits with the answer: a process killed mid-request leaves
        # no effect and no key behind (the retry runs for real), and effects never commit without
        # their answer (the retry replays it). A concurrent retry waits on the key's row.
        request = RequestTransaction(self.sessions, self.sessions())
        try:
            await request.session.begin()
            claim = {
                "key": key_text,
                "method": scope["method"],
                "path": scope["path"],
                "request_hash": digest,
                "state": "in_progress",
                "created_at": self.clock.now(),
            }
            if await self._claimed_if_new(request.session, claim):
                return await self._run(scope, body, send, key_text, request)
            existing = await self._answered(key_text, request.session)
            if existing is not None:
                request.session.expunge(existing)  # keeps its loaded values through the rollback
                await request.session.rollback()
                return await self._repeat(send, existing, digest)
            try:
                await request.session.execute(_CLAIM, claim)
            except IntegrityError:
                await request.session.rollback()
                async with self.sessions() as session, session.begin():
                    existing = await self._answered(key_text, session)
                if existing is None:
                    return await _json(send, 409, "a request with this Idempotency-Key is still in progress")
                return await self._repeat(send, existing, digest)
            await self._run(scope, body, send, key_text, request)
        finally:
            request.active = False
            await request.session.close()

    async def _run(self, scope: Scope, body: bytes, send: Send, key_text: str, request: RequestTransaction) -> None:
        status = 500
        headers_out: dict[str, str] = {}
        chunks: list[bytes] = []
        held: list[Message] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers_out.update({k.decode(): v.decode() for k, v in message.get("headers", [])})
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            # Held back until the key is stored: a client retrying the moment it has the answer
            # must find the key done, not still in progress.
            held.append(message)

        token = REQUEST_TRANSACTION.set(request)
        try:
            await self.app(scope, _replay(body), capture)
        finally:
            REQUEST_TRANSACTION.reset(token)
            request.active = False
            if status >= 500 or status in _NOT_KEPT:
                await request.session.rollback()
            else:
                await request.session.execute(
                    _FINISH,
                    {
                        "the_key": key_text,
                        "the_state": "done",
                        "the_status": status,
                        "the_body": b"".join(chunks),
                        "the_headers": {k: v for k, v in headers_out.items() if k != "content-length"}
                        | {"content-length": str(sum(map(len, chunks)))},
                    },
                )
                await request.session.commit()
        if status < 500 and status not in _NOT_KEPT:
            for callback in request.after_commit:
                callback()
        for message in held:
            await send(message)

    async def _claimed_if_new(self, session: AsyncSession, claim: dict[str, Any]) -> bool:
        """Whether ``claim`` was stored, the key being new; False when a row holds it already
        (or the database has no insert-or-nothing here): the caller reads it, as before."""
        if self._claim_if_new is _UNKNOWN:
            self._claim_if_new = _CLAIM_IF_NEW.get(session.get_bind().dialect.name)
        statement = self._claim_if_new
        if statement is None:
            return False
        result = await session.execute(statement, claim)
        return bool(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult: an INSERT's

    async def _answered(self, key: str, session: AsyncSession) -> IdempotencyKeyRow | None:
        """The stored answer to ``key`` (forgotten once older than the TTL), or None."""
        row = await session.scalar(_ANSWERED, {"key": key})
        if row is not None and self.clock.now() - row.created_at > self.ttl:
            await session.delete(row)
            await session.flush()
            return None
        return row

    async def _repeat(self, send: Send, existing: IdempotencyKeyRow, digest: str) -> None:
        if existing.request_hash != digest:
            return await _json(send, 409, "Idempotency-Key was already used with a different request")
        if existing.state != "done":
            return await _json(send, 409, "a request with this Idempotency-Key is still in progress")
        headers = [(k.encode(), v.encode()) for k, v in (existing.response_headers or {}).items()]
        headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": existing.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": existing.response_body or b""})


_ERRORS = {
    "400": "the request is malformed (an Idempotency-Key over 255 characters, a webhook signature that does not check out)",
    "401": "no token, or one that is invalid, expired, revoked or of a disabled person: send 'Authorization: Bearer <token>'",
    "403": "the caller's role (or the token's scope) may not do this",
    "429": "too many bad tokens from this address: wait for Retry-After seconds",
    "404": "what the request names does not exist",
    "409": "the request conflicts with the state (or its Idempotency-Key was used for a different request)",
    "413": "the body is larger than the service's limit (<SVC>_MAX_BODY_BYTES)",
    "422": "the request does not fit its schema or the business rules refuse it",
}
_ERROR_MODEL = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "title": "Detail",
            "description": "what is wrong: a sentence, or one entry per field that does not fit the schema",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}],
        }
    },
}


def declare_error_responses(app: FastAPI) -> None:
    """The 4xx answers every route can give, with their one error model (``{"detail": ...}``),
    in the app's OpenAPI document, so clients and fuzzers know them: 401 where the API key is
    needed, 400/409/413 on writes (Idempotency-Key, body limit), 404/422 wherever input names
    or carries something; 401, 403 and 429 wherever a token is needed."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault(
            "ValidationError", {"type": "object", "title": "ValidationError", "additionalProperties": True}
        )
        components["Error"] = _ERROR_MODEL
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
                if "health" in operation.get("tags", []):
                    continue
                codes = ["404", "422"]
                if method.upper() in WRITE_METHODS:
                    codes += ["400", "409", "413"]
                if operation.get("security") or "401" in operation["responses"]:
                    codes += ["401", "403", "429"]
                for code in codes:
                    declared = operation["responses"].setdefault(code, {})
                    declared["description"] = _ERRORS[code]
                    declared.update(ref)
                operation["responses"] = dict(sorted(operation["responses"].items()))
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to amend the schema


def install_plumbing(
    app: FastAPI,
    *,
    metrics: PlumbingMetrics,
    ready: Callable[[], Awaitable[dict[str, bool]]],
    sessions: async_sessionmaker,
    clock: Any,
    max_body_bytes: int,
    authenticator: Authenticator,
    lockout: Lockout,
    audit: AuditLog,
    protect_metrics: bool = False,
    trust_forwarded_for: bool = False,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
    max_writes_in_flight: int = 16,
) -> None:
    """Health, metrics, admission, access, error mapping, idempotency and body limit on a
    service's app."""

    def business_clock() -> dict[str, str]:
        return {"kind": "simulated" if getattr(clock, "simulated", False) else "system", "now": clock.now().isoformat()}

    @app.get("/health/live", tags=["health"], summary="The process is up", dependencies=[public()])
    async def live() -> dict[str, Any]:
        # With the business clock: cheap enough to poll after every simulated tick.
        return {"status": "ok", "clock": business_clock()}

    @app.get("/health/ready", tags=["health"], summary="Database and broker reachable", dependencies=[public()])
    async def readiness() -> JSONResponse:
        # Also which business clock the service follows (`system` or `simulated`) and its "now",
        # so a driver of the simulated clock (clientflow simulate) can tell when it caught up.
        checks = await ready()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks, "clock": business_clock()}, 200 if ok else 503
        )

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (a token with metrics.read when CLIENTFLOW_PROTECT_METRICS)",
        response_class=Response,
        dependencies=[public()],
    )
    async def metrics_endpoint() -> Response:
        if before_scrape is not None:
            await before_scrape()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, exc.status)

    # Starlette runs the last added first: request metrics, admission (the excess of writes is
    # refused before any work), then access (nothing before it looks at the request but those
    # two), then the body limit, the JSON guard (depth, lone
    # surrogates), then the Idempotency-Key.
    app.add_middleware(IdempotencyMiddleware, sessions=sessions, clock=clock, ttl=IDEMPOTENCY_TTL)
    app.add_middleware(JsonGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(
        AccessMiddleware,
        service=metrics.service,
        authenticator=authenticator,
        lockout=lockout,
        audit=audit,
        metrics=metrics,
        protect_metrics=protect_metrics,
        trust_forwarded_for=trust_forwarded_for,
    )
    app.add_middleware(AdmissionMiddleware, metrics=metrics, max_writes=max_writes_in_flight)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    declare_error_responses(app)

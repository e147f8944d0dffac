"""The four services as the console reaches them: their public HTTP APIs, with the signed-in
person's own bearer token, a short timeout each, and answers turned into what a page shows:
the data, a field-by-field error, or "this service is down".

A page asks several services at once (:func:`gather`); each part fails on its own, so a service
that does not answer costs only its part of the page.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

GENERAL = "_"  # the key of an error that names no field of the form


@dataclass
class Reply:
    """One answer of one service: ``data`` when 2xx; else ``status`` and ``errors`` (field -> message)
    or ``down`` (no answer: refused, timed out, 5xx)."""

    service: str
    status: int = 0
    data: Any = None
    errors: dict[str, str] = field(default_factory=dict)
    down: bool = False

    @property
    def ok(self) -> bool:
        return not self.down and 200 <= self.status < 300

    @property
    def message(self) -> str:
        return "; ".join(self.errors.values())


def _field_of(loc: list[Any]) -> str:
    """``["body", "lines", 1, "amount"]`` -> ``lines.1.amount``; ``["query", "owner"]`` -> ``owner``."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or GENERAL


def map_errors(detail: Any, fields: tuple[str, ...] = ()) -> dict[str, str]:
    """A service's ``detail`` as messages by form field. FastAPI's list (``loc``/``msg``) names the
    field itself; a sentence goes to the first of ``fields`` it names (services start their
    messages with the field: "amount must be greater than zero"), else to :data:`GENERAL`."""
    errors: dict[str, str] = {}
    if isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                key = _field_of(list(item.get("loc") or []))
                message = str(item.get("msg") or item)
            else:
                key, message = GENERAL, str(item)
            errors[key] = f"{errors[key]}; {message}" if key in errors else message
        return errors or {GENERAL: "the request was refused"}
    text = str(detail) if detail is not None else "the request was refused"
    named = sorted(
        (match.start(), name)
        for name in fields
        for match in [re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)]
        if match is not None
    )
    return {named[0][1] if named else GENERAL: text}


def reply_from(service: str, response: httpx.Response, fields: tuple[str, ...] = ()) -> Reply:
    if response.status_code >= 500:
        return Reply(service, status=response.status_code, down=True)
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    if response.is_success:
        return Reply(service, status=response.status_code, data=body)
    detail = body.get("detail") if isinstance(body, dict) else body
    return Reply(service, status=response.status_code, errors=map_errors(detail, fields))


class Backend:
    """The services' HTTP APIs for one signed-in person (``token``)."""

    def __init__(self, client: httpx.AsyncClient, urls: Mapping[str, str], token: str, *, timeout: float) -> None:
        self.client = client
        self.urls = urls
        self.token = token
        self.timeout = timeout

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        fields: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.client.request(
                method,
                f"{self.urls[service]}{path}",
                json=json,
                params=clean,
                headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
                timeout=self.timeout,
            )
        except httpx.HTTPError:
            return Reply(service, down=True)
        return reply_from(service, response, fields)

    async def download(self, service: str, path: str) -> httpx.Response | None:
        """A file as the service sends it (a download passed on to the browser), or None when
        the service does not answer."""
        try:
            return await self.client.get(
                f"{self.urls[service]}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout
            )
        except httpx.HTTPError:
            return None

    async def get(self, service: str, path: str, **params: Any) -> Reply:
        return await self.call(service, "GET", path, params=params)

    async def post(
        self, service: str, path: str, body: Any = None, *, fields: tuple[str, ...] = (), **kw: Any
    ) -> Reply:
        return await self.call(service, "POST", path, json=body, fields=fields, **kw)


async def gather(**calls: Awaitable[Reply]) -> dict[str, Reply]:
    """Run the calls at once; each keeps its own outcome."""
    names = list(calls)
    results = await asyncio.gather(*calls.values())
    return dict(zip(names, results, strict=True))

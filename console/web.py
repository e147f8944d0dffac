"""What every route of the console shares: the session of the request, the person's backend,
the CSRF check, the role check and rendering a page in the person's language."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment

from console.backend import Backend, Reply
from console.sessions import Session, SessionStore
from console.settings import Settings
from console.texts import direction, translator


@dataclass
class Console:
    """The wiring a route needs (kept on ``app.state.console``)."""

    settings: Settings
    store: SessionStore
    http: httpx.AsyncClient
    templates: Environment


class Refused(Exception):
    """A page or action the person may not see or do (a 403 page), or a bad form (CSRF)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class SignInNeeded(Exception):
    """No signed-in session: to the sign-in page, then back."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


def backend(request: Request) -> Backend:
    c = console_of(request)
    return Backend(c.http, c.settings.urls, session_of(request).token, timeout=c.settings.service_timeout_s)


def signed_in(request: Request, *permissions: str) -> Session:
    """The signed-in session holding every one of ``permissions`` (else SignInNeeded / Refused)."""
    session = session_of(request)
    if not session.signed_in:
        raise SignInNeeded()
    missing = [p for p in permissions if not session.may(p)]
    if missing:
        raise Refused(f"your role ({session.role}) may not see or do this: it needs {', '.join(missing)}")
    return session


async def posted(request: Request) -> dict[str, Any]:
    """The form of a POST after its CSRF token checked out (else Refused 403). Repeated fields
    (``line_description`` ...) come as lists."""
    form = await request.form()
    session = session_of(request)
    if not session.csrf_ok(str(form.get("csrf") or "")):
        raise Refused("this form is out of date or was not sent from the console (CSRF check failed); reload the page")
    values: dict[str, Any] = {}
    for key in form:
        items = [str(v) for v in form.getlist(key)]
        values[key] = items if key.startswith("line_") else items[-1]
    return values


def idempotency_key() -> str:
    """A key rendered into a form that must not act twice (a payment): a double submit repeats
    the same request, which the service answers once."""
    return f"console-{uuid.uuid4()}"


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    c = console_of(request)
    session = session_of(request)
    lang = session.lang or "en"
    body = c.templates.get_template(template).render(
        request=request,
        session=session,
        me=session.me,
        lang=lang,
        language=lang,
        dir=direction(lang),
        _=translator(lang),
        path=request.url.path,
        query=str(request.url.query),
        oidc=c.settings.oidc_enabled,
        new_key=idempotency_key,
        response_status=status,
        **context,
    )
    return HTMLResponse(body, status_code=status)


def back_to(path: str, *, note: str = "") -> RedirectResponse:
    """After a successful POST: see the page again (303), with a note to show."""
    return RedirectResponse(path + (f"?done={note}" if note else ""), status_code=303)


def down_notices(*replies: Reply) -> list[str]:
    """The services among ``replies`` that did not answer, once each."""
    seen: list[str] = []
    for reply in replies:
        if reply.down and reply.service not in seen:
            seen.append(reply.service)
    return seen

"""Signing in and out, and the language switch.

A personal token (or the bootstrap API key) is checked by asking a service who it is
(``GET /me``): the answer (name, role, permissions, languages) is what the console shows and
allows. In production people may sign in through the OpenID Connect provider instead
(authorization code flow with PKCE): the provider's token is then presented to the services,
which verify it themselves (shared/access/oidc.py), and checked with ``GET /me`` the same way.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from console.backend import Backend, Reply
from console.sessions import COOKIE, Session
from console.settings import SERVICES
from console.texts import LANGUAGES, pick_language
from console.web import console_of, posted, render, session_of

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path of this console (no open redirect to another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/pipeline"
    return target


def start_session(request: Request, response: Response, session: Session) -> None:
    c = console_of(request)
    response.set_cookie(
        COOKIE,
        c.store.cookie_value(session),
        httponly=True,
        samesite="lax",
        secure=c.settings.cookie_secure,
        path="/",
    )


async def who_is(request: Request, token: str) -> Reply:
    """``GET /me`` with ``token``, from the first service that answers."""
    c = console_of(request)
    api = Backend(c.http, c.settings.urls, token, timeout=c.settings.service_timeout_s)
    reply = Reply("leads", down=True)
    for service in SERVICES:
        reply = await api.get(service, "/me")
        if not reply.down:
            return reply
    return reply


async def _sign_in(request: Request, token: str, next_path: str) -> Response:
    reply = await who_is(request, token)
    if not reply.ok:
        if reply.down:
            message = "no service answered, so the token could not be checked; try again in a moment"
        elif reply.status in (401, 403):
            message = "this token is not valid (unknown, expired, revoked, or its person is disabled)"
        else:
            message = reply.message
        return render(request, "login.html.j2", status=503 if reply.down else 401, error=message, next=next_path)
    old = session_of(request)
    c = console_of(request)
    session = c.store.renew(old)
    session.token = token
    session.me = reply.data
    if not session.lang_chosen:
        session.lang = pick_language(reply.data.get("languages") or [], request.headers.get("accept-language", ""))
    request.state.session = session  # the middleware sends its cookie
    return RedirectResponse(_safe_next(next_path), status_code=303)


@router.get("/login", response_model=None)
async def login_form(request: Request, next: str = "/pipeline") -> Response:
    if session_of(request).signed_in:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html.j2", error="", next=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await posted(request)
    token = str(form.get("token", "")).strip()
    next_path = _safe_next(form.get("next"))
    if not token:
        return render(
            request,
            "login.html.j2",
            status=422,
            error="token: paste your personal token (or the API key)",
            next=next_path,
        )
    return await _sign_in(request, token, next_path)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await posted(request)
    c = console_of(request)
    c.store.drop(session_of(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/language")
async def language(request: Request) -> Response:
    form = await posted(request)
    lang = str(form.get("lang", ""))
    if lang in LANGUAGES:
        session = session_of(request)
        session.lang, session.lang_chosen = lang, True
    return RedirectResponse(_safe_next(form.get("next")), status_code=303)


# ---------------------------------------------------------------------------- OpenID Connect


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _redirect_uri(request: Request) -> str:
    return console_of(request).settings.public_url.rstrip("/") + "/login/oidc/callback"


@router.get("/login/oidc")
async def oidc_start(request: Request) -> Response:
    settings = console_of(request).settings
    if not settings.oidc_enabled:
        return render(
            request,
            "login.html.j2",
            status=404,
            error="sign-in with the identity provider is not set up here",
            next="/pipeline",
        )
    session = session_of(request)
    session.oidc_state = secrets.token_urlsafe(32)
    session.oidc_verifier, challenge = _pkce()
    query = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": _redirect_uri(request),
        "scope": settings.oidc_scopes,
        "state": session.oidc_state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return RedirectResponse(f"{settings.oidc_authorize_url}?{urlencode(query)}", status_code=302)


@router.get("/login/oidc/callback")
async def oidc_callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    c = console_of(request)
    settings = c.settings
    session = session_of(request)
    expected, verifier = session.oidc_state, session.oidc_verifier
    session.oidc_state = session.oidc_verifier = ""
    if error:
        return render(
            request, "login.html.j2", status=401, error=f"the identity provider refused: {error}", next="/pipeline"
        )
    if not settings.oidc_enabled or not expected or not secrets.compare_digest(state, expected) or not code:
        return render(
            request,
            "login.html.j2",
            status=400,
            error="this sign-in link is out of date; start again",
            next="/pipeline",
        )
    form: dict[str, Any] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _redirect_uri(request),
        "client_id": settings.oidc_client_id,
        "code_verifier": verifier,
    }
    secret = settings.oidc_client_secret.get_secret_value()
    try:
        if secret:  # a confidential client authenticates itself (client_secret_basic)
            auth = httpx.BasicAuth(settings.oidc_client_id, secret)
            answer = await c.http.post(
                settings.oidc_token_url, data=form, auth=auth, timeout=settings.service_timeout_s
            )
        else:  # a public client: PKCE alone
            answer = await c.http.post(settings.oidc_token_url, data=form, timeout=settings.service_timeout_s)
    except httpx.HTTPError:
        return render(
            request, "login.html.j2", status=503, error="the identity provider did not answer", next="/pipeline"
        )
    try:
        token = answer.json().get(settings.oidc_token_field) if answer.is_success else None
    except ValueError:
        token = None
    if not token:
        return render(
            request,
            "login.html.j2",
            status=401,
            error="the identity provider gave no token for this sign-in",
            next="/pipeline",
        )
    return await _sign_in(request, str(token), "/pipeline")

"""The console's composition root: ``create_app(settings, transport=None)``.

Server-rendered pages (Jinja2) over the four services' public HTTP APIs; htmx (vendored) for the
filters that update part of a page, Chart.js (vendored) for the economics charts. Nothing
connects at import; ``transport`` lets tests answer for the services (httpx.MockTransport).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from console import actions, auth, pages
from console.sessions import COOKIE, SessionStore
from console.settings import Settings
from console.texts import LANGUAGES, pick_language, template_filters, template_globals
from console.web import Console, Refused, SignInNeeded, render
from shared.i18n import jinja_filters

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("console")


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(jinja_filters())
    env.filters.update(template_filters())
    env.globals.update(template_globals())
    return env


def create_app(settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    settings = settings or Settings()
    http = httpx.AsyncClient(transport=transport, follow_redirects=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http.aclose()

    app = FastAPI(title="Clientflow console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    store = SessionStore(
        settings.secret_key.get_secret_value(), idle_s=settings.session_idle_s, max_s=settings.session_max_s
    )
    app.state.console = Console(settings=settings, store=store, http=http, templates=templates())

    @app.middleware("http")
    async def sessions(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        session = store.from_cookie(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = store.new()
            session.lang = pick_language([], request.headers.get("accept-language", ""))
        request.state.session = session
        response = await call_next(request)
        final = request.state.session  # sign-in swaps it
        if fresh or final is not session:
            auth.start_session(request, response, final)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        )
        if request.url.path not in ("/health/live", "/health/ready") and not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignInNeeded)
    async def to_login(request: Request, _exc: SignInNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return render(request, "error.html.j2", status=exc.status, message=exc.message, down=[])

    @app.exception_handler(Exception)
    async def broken(request: Request, exc: Exception) -> Response:
        logger.exception("console page failed: %s %s", request.method, request.url.path, exc_info=exc)
        return render(
            request,
            "error.html.j2",
            status=500,
            message="the console failed to show this page; the error is in its log",
            down=[],
        )

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        return RedirectResponse("/pipeline" if request.state.session.signed_in else "/login", status_code=303)

    @app.get("/health/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", include_in_schema=False)
    async def ready() -> dict[str, str]:
        # Ready as soon as it serves: a service that is down is shown on the pages, not here.
        return {"status": "ok", "languages": ",".join(LANGUAGES)}

    @app.exception_handler(404)
    async def not_found(request: Request, _exc: Exception) -> HTMLResponse:
        return render(request, "error.html.j2", status=404, message="there is no such page", down=[])

    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app

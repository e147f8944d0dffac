"""Estimates' HTTP routes: revisions and versions for staff, and the signed public link where
the client reads the estimate and accepts it (HTML pages in the lead's language; no token:
the link's signature proves itself, as nurture's unsubscribe link does)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.leads import deals, estimates
from services.leads.api import deal_out
from services.leads.context import Context
from services.leads.domain import estimates as rules
from services.leads.estimate_texts import TEXTS, direction, text
from services.leads.schemas import DealOut, RevisionIn, VersionOut
from shared import i18n
from shared.access import policy as P
from shared.access.rules import need, public
from shared.errors import DomainError
from shared.service import ServiceRuntime

TEMPLATES = Path(__file__).parent / "templates"

_LINK_QUERY: dict[str, Any] = {
    "v": Query(..., ge=1, le=1_000_000, description="the estimate version the link opens"),
    "t": Query(..., min_length=1, max_length=200, description="the link's signature"),
}


def client_address(request: Request, *, trust_forwarded_for: bool) -> str | None:
    """The address the client accepted from: behind a trusted proxy the first of
    X-Forwarded-For (CLIENTFLOW_TRUST_FORWARDED_FOR, as the access middleware reads it), else
    the connection's."""
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    return request.client.host if request.client else None


class Pages:
    """The acceptance pages, rendered with autoescaping (every value a client or a rep typed is text)."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, auto_reload=False
        )
        # money, date, number, digits: written in the page's ``lang`` (shared/i18n.py).
        self.env.filters.update(i18n.jinja_filters())

    def _html(self, template: str, language: str, status: int, **values: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(lang=language, dir=direction(language), **values)
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    def estimate(
        self, page: estimates.EstimatePage, *, action: str, error: str | None = None, typed: str | None = None
    ) -> HTMLResponse:
        lang, content = page.language, page.version.content
        base = text(lang, "base_month" if page.deal.kind == "retainer" else "base_total")
        valid_until = page.version.valid_until
        words = {key: text(lang, key) for key in TEXTS["en"]}
        words |= {
            "version": text(lang, "version", version=page.version.version),
            "deposit_text": text(
                lang,
                "deposit_text",
                percent=rules.percent(page.deposit_share),
                base=base,
                amount=i18n.format_money(page.deposit_amount, content["currency"], lang),
            ),
            "terms": text(lang, "terms", date=i18n.format_date(valid_until, lang) if valid_until else "-"),
        }
        return self._html(
            "estimate.html.j2",
            lang,
            422 if error else 200,
            title=words["page_title"],
            t=words,
            estimate=content,
            digest=page.version.digest,
            action=action,
            error=error,
            typed=typed,
        )

    def message(self, language: str, status: int, *, title: str, message: str, kind: str) -> HTMLResponse:
        return self._html("estimate_message.html.j2", language, status, title=title, message=message, kind=kind)

    def refused(self, refused: estimates.LinkRefused) -> HTMLResponse:
        lang = refused.language
        return self.message(
            lang,
            refused.status,
            title=text(lang, f"{refused.reason}_title"),
            message=text(lang, refused.reason),
            kind=refused.reason,
        )


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()
    pages = Pages()
    trust_forwarded_for = ctx.settings.trust_forwarded_for

    @api.post(
        "/deals/{deal_id}/revisions",
        dependencies=[need(P.DEALS_WRITE)],
        status_code=201,
        response_model=DealOut,
        tags=["deals"],
    )
    async def revise(deal_id: uuid.UUID, body: RevisionIn) -> DealOut:
        """Revise a proposed estimate (`deal.revised`): the deal keeps its id, its `version` goes up
        by one, earlier versions are kept (`GET /deals/{deal_id}/versions`) and their links no
        longer accept. `kind` may be left out (the deal's is kept)."""
        async with uow() as tx:
            deal = await estimates.revise_deal(tx, ctx, deal_id, body)
            return deal_out(deal, link=deals.acceptance_link(ctx, deal))

    @api.get(
        "/deals/{deal_id}/versions",
        dependencies=[need(P.LEADS_READ, person=True)],
        response_model=list[VersionOut],
        tags=["deals"],
    )
    async def versions(deal_id: uuid.UUID) -> list[VersionOut]:
        """Every version of the estimate, oldest first, with its content and its digest."""
        async with uow() as tx:
            return [VersionOut.model_validate(row) for row in await estimates.versions_of(tx, deal_id)]

    @api.get(
        "/estimates/{deal_id}/accept",
        dependencies=[public()],
        response_class=HTMLResponse,
        tags=["estimates"],
        responses={
            403: {"description": "bad signature"},
            409: {"description": "no longer open"},
            410: {"description": "superseded or expired"},
        },
    )
    async def estimate_page(
        deal_id: uuid.UUID, request: Request, v: int = _LINK_QUERY["v"], t: str = _LINK_QUERY["t"]
    ) -> HTMLResponse:
        """The signed link of one estimate version: the estimate in the lead's language (scope,
        total, deposit, terms) and a form to accept it with one's name. Opening it changes nothing."""
        try:
            async with uow() as tx:
                page = await estimates.open_estimate(tx, ctx, deal_id, version=v, token=t)
        except estimates.LinkRefused as refused:
            return pages.refused(refused)
        return pages.estimate(page, action=_action(request))

    @api.post(
        "/estimates/{deal_id}/accept",
        dependencies=[public()],
        response_class=HTMLResponse,
        tags=["estimates"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"name": {"type": "string", "maxLength": 200}},
                            "required": ["name"],
                        }
                    }
                },
            }
        },
        responses={
            403: {"description": "bad signature"},
            409: {"description": "no longer open (already accepted, won or lost)"},
            410: {"description": "superseded or expired"},
            422: {"description": "no name"},
        },
    )
    async def accept(
        deal_id: uuid.UUID, request: Request, v: int = _LINK_QUERY["v"], t: str = _LINK_QUERY["t"]
    ) -> HTMLResponse:
        """The client accepts the version the link opens (form field `name`): the deal is won
        (`deal.won` with `signed_via` link, the address, the version and its digest)."""
        raw = (await request.body()).decode("utf-8", "replace")
        name = (parse_qs(raw, keep_blank_values=True).get("name") or [""])[0]
        ip = client_address(request, trust_forwarded_for=trust_forwarded_for)
        try:
            async with uow() as tx:
                page = await estimates.accept_estimate(tx, ctx, deal_id, version=v, token=t, name=name, ip=ip)
                signed_by = page.deal.signed_by or name
        except estimates.LinkRefused as refused:
            if refused.reason != "name_required":
                return pages.refused(refused)
            try:
                async with uow() as tx:
                    again = await estimates.open_estimate(tx, ctx, deal_id, version=v, token=t)
            except estimates.LinkRefused as now_refused:
                return pages.refused(now_refused)
            return pages.estimate(
                again, action=_action(request), error=text(again.language, "name_required"), typed=name
            )
        except DomainError as exc:
            return pages.message(
                "en", exc.status, title=text("en", "closed_title"), message=exc.message, kind="refused"
            )
        lang = page.language
        return pages.message(
            lang,
            200,
            title=text(lang, "thanks_title"),
            message=text(
                lang, "thanks_text", name=signed_by, title=page.version.content["title"], version=page.version.version
            ),
            kind="accepted",
        )

    return api


def _action(request: Request) -> str:
    """The form posts back to the very link it was opened with."""
    return f"{request.url.path}?{request.url.query}"

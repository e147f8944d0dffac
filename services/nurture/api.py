"""Nurture's HTTP routes: validate, call one use case, answer.

Public links (open pixel, click redirect, unsubscribe, survey) carry tokens signed with the
service's secret key; a token that does not verify answers 404 and changes nothing.
"""

from __future__ import annotations

import html
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ValidationError

from services.nurture import catalog, consent, domain, sending, tracking
from services.nurture import replies as reply_cases
from services.nurture.content import PAGE_FONTS, RTL_LANGUAGES, Renderer, page_language, page_text
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import known_contact
from services.nurture.schemas import (
    BounceIn,
    FeedbackIn,
    FeedbackOut,
    InboundIn,
    MatchIn,
    MessageOut,
    ReplyOut,
    SequenceOut,
)
from services.nurture.sender import Links
from services.nurture.settings import Settings
from services.nurture.store import Message
from shared.access import policy as P
from shared.access.rules import need, public, refusal
from shared.errors import Invalid, NotFound
from shared.i18n import native_digits
from shared.service import ServiceRuntime
from shared.signing import SIGNATURE_HEADER, verify_signature

# The smallest transparent GIF: what an open pixel answers.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def message_out(message: Message) -> MessageOut:
    return MessageOut(
        message_id=message.message_id,
        sequence=message.sequence,
        step=message.step,
        template=message.template,
        subject=message.subject,
        category=message.category,
        sent_at=message.sent_at,
        language=message.language,
    )


def sequence_out(stored: catalog.StoredSequence) -> SequenceOut:
    sequence = stored.sequence
    return SequenceOut(
        name=sequence.name,
        source=stored.source,
        trigger=sequence.trigger,
        category=sequence.category,
        definition=dict(sequence.source),
    )


_Body = TypeVar("_Body", bound=BaseModel)


def reply_out(outcome: reply_cases.ReplyOutcome) -> ReplyOut:
    reply = outcome.reply
    return ReplyOut(
        reply_id=reply.id,
        lead_id=reply.lead_id,
        matched=reply.lead_id is not None,
        matched_by=reply.matched_by,
        takeover_started=outcome.takeover_started,
        task_id=outcome.task.id if outcome.task else None,
        from_address=reply.from_address,
        subject=reply.subject,
        received_at=reply.received_at,
    )


def page(title: str, body: str, language: str = "en") -> HTMLResponse:
    """A public page in ``language``: ``lang`` and ``dir`` set, fonts that have its script."""
    lang = page_language(language)
    rtl = lang in RTL_LANGUAGES
    direction = ";direction:rtl;text-align:right" if rtl else ""
    return HTMLResponse(
        f'<!DOCTYPE html><html lang="{lang}" dir="{"rtl" if rtl else "ltr"}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family:{PAGE_FONTS.get(lang, "")}sans-serif;max-width:36em;margin:3em auto{direction}">'
        f"{body}</body></html>",
        headers={"Content-Language": lang},
    )


def router(
    runtime: ServiceRuntime,
    settings: Settings,
    *,
    builtin: domain.Catalog,
    renderer: Renderer,
    metrics: NurtureMetrics,
) -> APIRouter:
    api = APIRouter()
    uow = runtime.uow
    secret = settings.secret_key.get_secret_value()
    engagement = settings.engagement
    task_policy = settings.tasks
    reply_days = settings.takeover.reply_days

    links = Links(settings)

    @api.get(
        "/leads/{lead_id}/messages",
        dependencies=[need(P.MESSAGES_READ, person=True)],
        response_model=list[MessageOut],
        tags=["messages"],
    )
    async def read_messages(lead_id: uuid.UUID, request: Request) -> list[MessageOut]:
        """Emails sent to a person, oldest first. For an admin, each also carries its text and open
        pixel: their links are signed capabilities (unsubscribe), not for every reader."""
        trusted = request.state.principal.role == "admin"
        async with uow() as tx:
            messages = await sending.list_messages(tx, lead_id)
        if not trusted:
            return [message_out(m) for m in messages]
        return [
            message_out(m).model_copy(update={"body_text": m.body_text, "open_url": links.open_pixel(m.message_id)})
            for m in messages
        ]

    # ------------------------------------------------------------------ sequences

    @api.get("/sequences", dependencies=[need(P.SEQUENCES_READ)], response_model=list[SequenceOut], tags=["sequences"])
    async def list_sequences() -> list[SequenceOut]:
        """Every sequence: the built-in files, with those written through the API in their place."""
        async with uow() as tx:
            return [sequence_out(stored) for stored in await catalog.list_sequences(tx, builtin)]

    @api.get("/sequences/{name}", dependencies=[need(P.SEQUENCES_READ)], response_model=SequenceOut, tags=["sequences"])
    async def read_sequence(name: str) -> SequenceOut:
        async with uow() as tx:
            return sequence_out(await catalog.get_sequence(tx, builtin, name))

    @api.put(
        "/sequences/{name}", dependencies=[need(P.SEQUENCES_WRITE)], response_model=SequenceOut, tags=["sequences"]
    )
    async def write_sequence(name: str, definition: Annotated[dict[str, Any], Body()]) -> SequenceOut:
        """Create or replace a sequence (the format of services/nurture/content.py). Refused with
        the reason: an unknown trigger, a bad delay, a missing template, a cycle."""
        async with uow() as tx:
            sequence = await catalog.put_sequence(
                tx, builtin, name=name, definition=definition, missing_templates=renderer.missing
            )
        return sequence_out(catalog.StoredSequence(sequence, "api"))

    # ------------------------------------------------------------------ tracking (public, signed)

    @api.get("/t/o/{token}.gif", dependencies=[public()], tags=["tracking"], response_class=Response)
    async def open_pixel(token: str) -> Response:
        """The open pixel: ``email.opened`` at the first load."""
        message_id = domain.verify_message_token(secret, "open", token)
        if message_id is None:
            raise NotFound("no such link")
        async with uow() as tx:
            tracked = await tracking.record_open(tx, message_id, engagement=engagement, metrics=metrics)
        if tracked is None:
            raise NotFound("no such link")
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @api.get(
        "/t/c/{token}", dependencies=[public()], tags=["tracking"], response_class=RedirectResponse, status_code=302
    )
    async def click(token: str, u: str = Query(..., max_length=4000)) -> RedirectResponse:
        """A tracked link: ``email.clicked``, then on to the target (signed with the token, so the
        redirect cannot be pointed elsewhere)."""
        message_id = domain.verify_message_token(secret, "click", token, u)
        if message_id is None or not domain.trackable(u):
            raise NotFound("no such link")
        async with uow() as tx:
            tracked = await tracking.record_click(tx, message_id, url=u, engagement=engagement, metrics=metrics)
        if tracked is None:
            raise NotFound("no such link")
        return RedirectResponse(u, status_code=302)

    async def _language(lead_id: uuid.UUID) -> str:
        """The person's language, for the pages they open from an e-mail (English if unknown)."""
        async with uow() as tx:
            contact = await known_contact(tx, lead_id)
        return page_language(contact.language if contact is not None else None)

    def _unsubscriber(token: str) -> uuid.UUID:
        lead_id = domain.verify_unsubscribe_token(secret, token)
        if lead_id is None:
            raise NotFound("no such link")
        return lead_id

    @api.get("/unsubscribe", dependencies=[public()], tags=["tracking"], response_class=HTMLResponse)
    async def unsubscribe_page(token: str = Query(..., max_length=200), m: str | None = Query(None)) -> HTMLResponse:
        """Asks to confirm (a link scanner opening the link must not unsubscribe anybody)."""
        lang = await _language(_unsubscriber(token))
        action = html.escape(f"/unsubscribe?token={token}" + (f"&m={m}" if m else ""))
        return page(
            page_text(lang, "unsubscribe_title"),
            f"<p>{page_text(lang, 'unsubscribe_question', brand=html.escape(settings.brand_name))}</p>"
            f'<form method="post" action="{action}">'
            f'<button type="submit">{page_text(lang, "unsubscribe_button")}</button></form>',
            lang,
        )

    @api.post("/unsubscribe", dependencies=[public()], tags=["tracking"], response_class=HTMLResponse)
    async def unsubscribe(token: str = Query(..., max_length=200), m: str | None = Query(None)) -> HTMLResponse:
        """One-click unsubscribe (RFC 8058 ``List-Unsubscribe-Post``, and the page's button):
        every marketing sequence stops, ``lead.unsubscribed``."""
        lead_id = _unsubscriber(token)
        try:
            message_id = uuid.UUID(m) if m else None
        except ValueError:
            message_id = None
        async with uow() as tx:
            tracked = await tracking.unsubscribe(
                tx, lead_id=lead_id, message_id=message_id, builtin=builtin, metrics=metrics
            )
            if tracked is not None and tracked.first:
                consent.withdrawn(tx, lead_id, source="unsubscribe_link")  # the consent history
        if tracked is None:
            raise NotFound("no such link")
        lang = await _language(lead_id)
        return page(page_text(lang, "unsubscribed_title"), f"<p>{page_text(lang, 'unsubscribed')}</p>", lang)

    # ------------------------------------------------------------------ surveys and feedback

    async def _survey(token: str) -> tracking.Survey:
        message_id = domain.verify_message_token(secret, "survey", token)
        if message_id is None:
            raise NotFound("no such survey")
        async with uow() as tx:
            return await tracking.survey_of(tx, message_id)

    @api.get("/survey/{token}", dependencies=[public()], tags=["feedback"], response_class=HTMLResponse)
    async def survey_page(token: str, score: int | None = Query(None, ge=0, le=10)) -> HTMLResponse:
        """A score link of a survey email opens the question with that score chosen; only
        sending the form answers (a mail scanner's GET records nothing)."""
        asked = await _survey(token)
        async with uow() as tx:
            earlier = await tracking.feedback_of(tx, lead_id=asked.lead_id, survey=asked.survey)
            contact = await known_contact(tx, asked.lead_id)
        lang = page_language(contact.language if contact is not None else None)
        chosen = score if score is not None else (earlier.score if earlier is not None else None)
        choices = "".join(
            f'<label style="margin-right:.6em"><input type="radio" name="score" value="{n}"'
            f"{' checked' if n == chosen else ''} required> {native_digits(str(n), lang)}</label>"
            for n in range(11)
        )
        before = native_digits(str(earlier.score), lang) if earlier is not None and earlier.score is not None else "-"
        note = f"<p><em>{page_text(lang, 'survey_before', score=before)}</em></p>" if earlier is not None else ""
        return page(
            page_text(lang, "survey_title"),
            f"<h1>{page_text(lang, 'survey_question')}</h1>"
            f'{note}<form method="post" action="/feedback">'
            f'<input type="hidden" name="token" value="{html.escape(token)}">'
            f"<p>{page_text(lang, 'survey_scale')}</p><p>{choices}</p>"
            f"<p><label>{page_text(lang, 'survey_comment')} "
            '<textarea name="comment" rows="4" cols="40"></textarea></label></p>'
            f'<button type="submit">{page_text(lang, "survey_send")}</button></form>',
            lang,
        )

    @api.post(
        "/feedback",
        dependencies=[need(P.FEEDBACK_WRITE, optional=True)],
        status_code=201,
        response_model=FeedbackOut,
        tags=["feedback"],
        responses={401: {"description": "lead_id and survey without a token"}},
    )
    async def feedback(request: Request) -> FeedbackOut:
        """A survey answer (0-10 and a comment), JSON or a form: with the ``token`` of a survey
        email (public), or with ``lead_id`` and ``survey`` and the API key. Complaints are flagged
        (``feedback.received`` with ``complaint``), counted and followed up, never dropped."""
        raw = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
                body = FeedbackIn.model_validate({k: (v if v != "" else None) for k, v in fields.items()})
            else:
                body = FeedbackIn.model_validate(json.loads(raw or b"{}"))
        except (ValidationError, ValueError) as exc:
            raise Invalid(f"not a feedback answer: {exc}") from None
        if body.token:
            asked = await _survey(body.token)
            lead_id, survey, message_id = asked.lead_id, asked.survey, asked.message_id
        else:
            # Without the e-mail's signed token, a person's token with feedback.write (the access
            # middleware checked it, if one was sent).
            principal = request.state.principal
            if principal is None:
                raise HTTPException(
                    401,
                    "give the survey token of the email, or send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer"},
                )
            if not P.may(principal.role, P.FEEDBACK_WRITE, principal.scopes):
                raise HTTPException(403, refusal(principal, P.FEEDBACK_WRITE))
            if body.lead_id is None or not body.survey:
                raise Invalid("give the survey token of the email, or lead_id and survey")
            lead_id, survey, message_id = body.lead_id, body.survey, None
        async with uow() as tx:
            saved, _ = await tracking.record_feedback(
                tx,
                lead_id=lead_id,
                survey=survey,
                score=body.score,
                comment=body.comment,
                message_id=message_id,
                engagement=engagement,
                task_policy=task_policy,
                metrics=metrics,
            )
        if body.token and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            # The person's own browser sent the survey form: a page, not JSON.
            lang = await _language(lead_id)
            thanks = (
                page_text(lang, "thanks_score", score=native_digits(str(saved.score), lang))
                if saved.score is not None
                else page_text(lang, "thanks_comment")
            )
            return page(page_text(lang, "thanks_title"), f"<p>{thanks}</p>", lang)  # type: ignore[return-value]
        return FeedbackOut.model_validate(saved)

    # ------------------------------------------------------------------ provider webhooks

    mail_secret = settings.webhook_secret.get_secret_value()

    async def _provider_body(request: Request, model: type[_Body]) -> tuple[_Body, bool]:
        """The webhook's body, from the mail provider (signed with NURTURE_WEBHOOK_SECRET, as
        billing's payment webhook is) or from a person's token with mail.webhooks (checked by
        the access middleware). Returns it and whether a person sent it."""
        raw = await request.body()
        by_person = request.state.principal is not None
        if not by_person:
            verify_signature(
                header=request.headers.get(SIGNATURE_HEADER),
                body=raw,
                secret=mail_secret,
                now=datetime.now(UTC),
                tolerance_s=settings.webhook_tolerance_s,
            )
        try:
            return model.model_validate_json(raw or b"{}"), by_person
        except ValidationError as exc:
            raise Invalid(f"not a {model.__name__}: {exc}") from None

    @api.post(
        "/webhooks/bounce",
        dependencies=[need(P.MAIL_WEBHOOKS, optional=True)],
        status_code=202,
        tags=["webhooks"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": BounceIn.model_json_schema()}}}
        },
    )
    async def bounce(request: Request) -> dict[str, str]:
        """A bounce (``email.bounced``), signed by the mail provider (``Clientflow-Signature``);
        a hard one stops all email to the address."""
        body, _ = await _provider_body(request, BounceIn)
        if body.message_id is None and not body.email:
            raise Invalid("give message_id or email")
        async with uow() as tx:
            await tracking.record_bounce(
                tx,
                message_id=body.message_id,
                address=body.email,
                hard=body.hard,
                reason=body.reason,
                builtin=builtin,
                metrics=metrics,
            )
        return {"status": "recorded"}

    @api.post(
        "/webhooks/inbound",
        dependencies=[need(P.MAIL_WEBHOOKS, optional=True)],
        status_code=201,
        response_model=ReplyOut,
        tags=["webhooks"],
        responses={202: {"model": ReplyOut, "description": "kept unmatched: no thread names an e-mail we sent"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": InboundIn.model_json_schema()}},
            }
        },
    )
    async def inbound(request: Request, response: Response) -> ReplyOut:
        """An inbound e-mail, signed by the mail provider (``Clientflow-Signature``). It is matched
        to a person only by its thread: ``In-Reply-To`` or ``References`` naming a Message-ID we
        sent (the From address alone proves nothing: anybody can write it). Matched, it is
        recorded, sequences that exit on a reply end, a human takeover starts by itself, and a
        high-value person's reply becomes a task. Unmatched, it is kept (202) for a person to
        match by hand (``POST /replies/{reply_id}/match``)."""
        body, by_person = await _provider_body(request, InboundIn)
        async with uow() as tx:
            outcome = await reply_cases.record_reply(
                tx,
                lead_id=body.lead_id if by_person else None,
                thread=domain.thread_message_ids(body.in_reply_to, body.references),
                from_address=body.from_address,
                subject=body.subject,
                text=body.text,
                builtin=builtin,
                engagement=engagement,
                task_policy=task_policy,
                metrics=metrics,
                reply_days=reply_days,
            )
        if outcome.reply.lead_id is None:
            response.status_code = 202
        return reply_out(outcome)

    @api.get("/replies", dependencies=[need(P.MESSAGES_READ)], response_model=list[ReplyOut], tags=["webhooks"])
    async def replies(
        status: str = Query("unmatched", pattern="^(unmatched|matched|all)$"),
        lead_id: uuid.UUID | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[ReplyOut]:
        """Inbound e-mails; by default the ones no thread matched, for a person to look at."""
        async with uow() as tx:
            found = await reply_cases.list_replies(tx, status=status, lead_id=lead_id, limit=limit)
            return [reply_out(reply_cases.ReplyOutcome(r, False, None)) for r in found]

    @api.post(
        "/replies/{reply_id}/match", dependencies=[need(P.TAKEOVER_WRITE)], response_model=ReplyOut, tags=["webhooks"]
    )
    async def match_reply(reply_id: uuid.UUID, body: MatchIn) -> ReplyOut:
        """A person matched an unmatched e-mail to the one who wrote it: from now on it counts as
        their reply (takeover, sequences that exit on a reply, a task for a high-value person)."""
        async with uow() as tx:
            outcome = await reply_cases.match_reply(
                tx,
                reply_id=reply_id,
                lead_id=body.lead_id,
                builtin=builtin,
                engagement=engagement,
                task_policy=task_policy,
                metrics=metrics,
                reply_days=reply_days,
            )
        return reply_out(outcome)

    return api

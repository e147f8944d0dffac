"""Nurture's consent routes: a person's consent history (staff), and the signed public link a
person confirms a consent request with (``GET`` shows the page, only ``POST`` confirms: mail
scanners open links); consent a person gave or withdrew to staff."""

from __future__ import annotations

import html
import uuid
from datetime import datetime

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from services.nurture import consent, domain, tracking
from services.nurture.api import page
from services.nurture.content import page_language
from services.nurture.domain import consent as rules
from services.nurture.metrics import NurtureMetrics
from services.nurture.settings import Settings
from shared.access import policy as P
from shared.access.rules import need, public
from shared.errors import NotFound
from shared.service import ServiceRuntime


class ConsentRecordOut(BaseModel):
    """One grant, request or withdrawal of marketing consent."""

    record_id: uuid.UUID
    kind: str = Field(description="grant, request (waiting for the person's confirmation) or withdrawal")
    source: str = Field(description="form, import, referral, unsubscribe_link, confirmation_link or staff")
    wording: str | None = Field(description="the version of the consent wording the person saw")
    at: datetime
    confirmed_at: datetime | None = Field(default=None, description="a request: when the person confirmed it")


class ConsentIn(BaseModel):
    """Consent the person gave or withdrew to staff (a call, a signed paper form)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    consent: bool = Field(description="true: the person consents to marketing e-mail; false: they withdrew it")
    wording: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        pattern=r"^[\w.\-]+$",
        description="the version of the consent wording they agreed to (default NURTURE_CONSENT_WORDING_VERSION)",
    )


class ConsentOut(BaseModel):
    """A person's marketing consent now and its history, oldest first."""

    lead_id: uuid.UUID
    consent_marketing: bool
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    pending_request: bool = Field(description="a request waits for the person's confirmation")
    history: list[ConsentRecordOut]


# The confirmation page's words (en, bn, fa; other languages read English).
TEXTS = {
    "en": {
        "title": "Confirm our emails",
        "question": "Do you want to receive {brand}'s emails at this address again?",
        "button": "Yes, send me your emails",
        "done_title": "Confirmed",
        "done": "Thank you: you will receive our emails again. Every email has a link to stop them.",
    },
    "bn": {
        "title": "আমাদের ইমেল নিশ্চিত করুন",
        "question": "আপনি কি এই ঠিকানায় আবার {brand}-এর ইমেল পেতে চান?",
        "button": "হ্যাঁ, আমাকে ইমেল পাঠান",
        "done_title": "নিশ্চিত হয়েছে",
        "done": "ধন্যবাদ: আপনি আবার আমাদের ইমেল পাবেন। প্রতিটি ইমেলে সেগুলো বন্ধ করার একটি লিংক থাকে।",
    },
    "fa": {
        "title": "تأیید ایمیل‌های ما",
        "question": "آیا می‌خواهید ایمیل‌های {brand} دوباره به این نشانی فرستاده شود؟",
        "button": "بله، ایمیل‌ها را برایم بفرستید",  # noqa: RUF001
        "done_title": "تأیید شد",
        "done": "سپاس‌گزاریم: ایمیل‌های ما دوباره به دستتان می‌رسد. هر ایمیل پیوندی برای لغو آن‌ها دارد.",  # noqa: RUF001
    },
}


def _text(lang: str, key: str, **values: str) -> str:
    return TEXTS.get(lang, TEXTS["en"])[key].format(**values)


def confirm_link(settings: Settings, request_id: uuid.UUID) -> str:
    """The signed public link of a consent request."""
    token = rules.confirm_token(settings.secret_key.get_secret_value(), request_id)
    return f"{settings.public_url.rstrip('/')}/consent/confirm?token={token}"


def router(
    runtime: ServiceRuntime, settings: Settings, *, builtin: domain.Catalog, metrics: NurtureMetrics
) -> APIRouter:
    api = APIRouter()
    uow = runtime.uow
    secret = settings.secret_key.get_secret_value()

    async def consent_out(lead_id: uuid.UUID) -> ConsentOut:
        async with uow() as tx:
            contact, rows = await consent.history(tx, lead_id)
            return ConsentOut(
                lead_id=lead_id,
                consent_marketing=contact.consent_marketing,
                unsubscribed_at=contact.unsubscribed_at,
                bounced_at=contact.bounced_at,
                pending_request=any(r.kind == "request" and r.confirmed_at is None for r in rows)
                and not contact.consent_marketing,
                history=[
                    ConsentRecordOut(
                        record_id=r.id,
                        kind=r.kind,
                        source=r.source,
                        wording=r.wording,
                        at=r.at,
                        confirmed_at=r.confirmed_at,
                    )
                    for r in rows
                ],
            )

    def _request_id(token: str) -> uuid.UUID:
        request_id = rules.verify_confirm_token(secret, token)
        if request_id is None:
            raise NotFound("no such link")
        return request_id

    @api.get(
        "/leads/{lead_id}/consent",
        dependencies=[need(P.CONSENT_READ, person=True)],
        response_model=ConsentOut,
        tags=["consent"],
        responses={409: {"description": "the person was erased"}},
    )
    async def read_consent(lead_id: uuid.UUID) -> ConsentOut:
        """The person's marketing consent now and every grant, request and withdrawal with its
        time, source and wording version (404 for an unknown person, 409 for an erased one)."""
        return await consent_out(lead_id)

    @api.post(
        "/leads/{lead_id}/consent",
        dependencies=[need(P.CONSENT_WRITE)],
        response_model=ConsentOut,
        tags=["consent"],
        responses={409: {"description": "the person was erased"}},
    )
    async def record_consent(lead_id: uuid.UUID, body: ConsentIn) -> ConsentOut:
        """Record consent the person gave or withdrew to staff (source `staff`): a withdrawal
        stops marketing as the unsubscribe link does (`lead.unsubscribed`)."""
        async with uow() as tx:
            if body.consent:
                await consent.staff_grant(tx, lead_id, wording=body.wording or settings.consent_wording_version)
            else:
                await consent.history(tx, lead_id)  # 404 / 409 before anything changes
                tracked = await tracking.unsubscribe(
                    tx, lead_id=lead_id, message_id=None, builtin=builtin, metrics=metrics
                )
                if tracked is not None and tracked.first:
                    consent.withdrawn(tx, lead_id, source="staff")
        return await consent_out(lead_id)

    @api.get("/consent/confirm", dependencies=[public()], tags=["consent"], response_class=HTMLResponse)
    async def confirm_page(token: str = Query(..., max_length=200)) -> HTMLResponse:
        """The confirmation link's page: a button that confirms (this GET changes nothing)."""
        request_id = _request_id(token)
        async with uow() as tx:
            _row, contact = await consent.open_request(tx, request_id)
            lang = page_language(contact.language)
        action = html.escape(f"/consent/confirm?token={token}")
        return page(
            _text(lang, "title"),
            f"<p>{html.escape(_text(lang, 'question', brand=settings.brand_name))}</p>"
            f'<form method="post" action="{action}">'
            f'<button type="submit">{html.escape(_text(lang, "button"))}</button></form>',
            lang,
        )

    @api.post("/consent/confirm", dependencies=[public()], tags=["consent"], response_class=HTMLResponse)
    async def confirm(token: str = Query(..., max_length=200)) -> HTMLResponse:
        """The person confirms: marketing consent is back (a grant from the confirmation link)."""
        request_id = _request_id(token)
        async with uow() as tx:
            _row, contact = await consent.open_request(tx, request_id)
            lang = page_language(contact.language)
            await consent.confirm(tx, request_id)
        return page(_text(lang, "done_title"), f"<p>{html.escape(_text(lang, 'done'))}</p>", lang)

    return api

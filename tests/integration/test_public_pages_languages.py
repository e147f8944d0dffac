# ruff: noqa: RUF001  (Bengali and Persian digits are meant, not look-alikes)
"""The pages a person opens from an e-mail (unsubscribe, the survey, its thank-you) answer in
their language, with ``lang`` and ``dir`` set; a bad token is still a 404 that changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services.nurture import domain
from services.nurture.app import create_app
from services.nurture.settings import Settings
from services.nurture.store import Contact, Feedback, Message
from tests.support import run_service, service_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> Settings:
    return service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url, data_dir=tmp_path)


async def person(svc, language: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A contact in ``language`` and a survey e-mail sent to them."""
    lead_id, message_id = uuid.uuid4(), uuid.uuid4()
    async with svc.runtime.uow.sessions() as session, session.begin():
        session.add(
            Contact(
                lead_id=lead_id,
                name="Test Person",
                email=f"{lead_id.hex[:10]}@example.com",
                language=language,
                consent_marketing=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        session.add(
            Message(
                message_id=message_id,
                lead_id=lead_id,
                sequence="onboarding",
                step=2,
                template="survey",
                language=language,
                subject="-",
                category="transactional",
                sent_at=NOW,
            )
        )
    return lead_id, message_id


EXPECTED = {
    # language: (lang, dir, unsubscribe question, unsubscribed, survey question, a score label, thanks)
    "en": (
        "en",
        "ltr",
        "Stop Clientflow's marketing emails?",
        "no more marketing emails",
        "recommend us",
        "> 9</label>",
        "9/10",
    ),
    "bn-BD": ("bn", "ltr", "মার্কেটিং ইমেইল বন্ধ করবেন?", "আর কোনো মার্কেটিং ইমেইল পাবেন না", "সুপারিশ", "> ৯</label>", "৯/১০"),
    "fa": (
        "fa",
        "rtl",
        "ایمیل‌های تبلیغاتی Clientflow قطع شود؟",
        "دیگر ایمیل تبلیغاتی",
        "پیشنهاد کنید",
        "> ۹</label>",
        "نمرهٔ ۹ از ۱۰",
    ),
}


@pytest.mark.parametrize("language", list(EXPECTED))
async def test_public_pages_answer_in_the_persons_language(settings: Settings, language: str) -> None:
    lang, direction, question, done, survey_q, label, thanks = EXPECTED[language]
    secret = settings.secret_key.get_secret_value()
    async with run_service(create_app(settings), settings.port) as svc:
        lead_id, message_id = await person(svc, language)
        token = domain.unsubscribe_token(secret, lead_id)
        async with httpx.AsyncClient(base_url=svc.url) as public:
            asked = await public.get("/unsubscribe", params={"token": token})
            assert asked.status_code == 200 and asked.headers["content-language"] == lang
            assert f'<html lang="{lang}" dir="{direction}">' in asked.text and question in asked.text
            if lang == "fa":
                assert "Vazirmatn" in asked.text and "direction:rtl" in asked.text
            if lang == "bn":
                assert "Noto Sans Bengali" in asked.text

            unsubscribed = await public.post("/unsubscribe", params={"token": token})
            assert unsubscribed.status_code == 200 and done in unsubscribed.text
            assert f'lang="{lang}"' in unsubscribed.text

            survey_token = domain.message_token(secret, "survey", message_id)
            page = await public.get(f"/survey/{survey_token}", params={"score": 9})
            assert page.status_code == 200 and f'lang="{lang}"' in page.text
            assert survey_q in page.text and label in page.text and 'value="9" checked' in page.text

            form = {"token": survey_token, "score": "9", "comment": ""}
            answered = await public.post("/feedback", data=form)
            assert answered.status_code == 200 and thanks in answered.text and f'dir="{direction}"' in answered.text
            again = await public.get(f"/survey/{survey_token}")
            before = {"en": "You answered 9/10 before", "bn": "আপনি আগে ৯/১০", "fa": "پیش‌تر ۹ از ۱۰"}[lang]
            assert before in again.text


async def test_bad_tokens_are_404_and_change_nothing(settings: Settings) -> None:
    async with run_service(create_app(settings), settings.port) as svc:
        lead_id, message_id = await person(svc, "fa")
        forged = domain.unsubscribe_token("not-the-secret", lead_id)
        async with httpx.AsyncClient(base_url=svc.url) as public:
            assert (await public.get("/unsubscribe", params={"token": forged})).status_code == 404
            assert (await public.post("/unsubscribe", params={"token": forged})).status_code == 404
            bad_survey = domain.message_token("not-the-secret", "survey", message_id)
            assert (await public.get(f"/survey/{bad_survey}")).status_code == 404
            refused = await public.post("/feedback", data={"token": bad_survey, "score": "9"})
            assert refused.status_code == 404
            out_of_range = await public.get(
                f"/survey/{domain.message_token(settings.secret_key.get_secret_value(), 'survey', message_id)}",
                params={"score": 11},
            )
            assert out_of_range.status_code == 422 and "score" in out_of_range.text
        async with svc.runtime.uow.sessions() as session:
            contact = await session.get(Contact, lead_id)
            assert contact is not None and contact.unsubscribed_at is None
            assert await session.scalar(select(func.count()).where(Feedback.lead_id == lead_id)) == 0

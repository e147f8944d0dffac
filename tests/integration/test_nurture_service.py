"""Nurture against a real broker and a real database."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.nurture.app import create_app
from services.nurture.settings import Settings
from services.nurture.store import Contact, Message, ScheduledMessage
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import InboxRow, OutboxRow
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration

FOLLOW_UP = timedelta(days=3)  # welcome's step 1 delay (sequences/welcome.yaml)


class ManualClock(SimulatedClock):
    """Business time moved only by the test. Not ``simulated``, so the runtime does not read the
    broker's clock topic, which other tests of the session drive to far-off dates."""

    simulated = False


def captured(*, consent: bool = True, language: str = "en", duplicate: bool = False) -> ev.LeadCaptured:
    return ev.LeadCaptured(
        name="Ada Lovelace",
        email=f"{uuid.uuid4().hex[:10]}@analytical.example",
        language=language,
        timezone="Europe/London",
        channel="website",
        consent_marketing=consent,
        fit_score=72,
        segment="ideal",
        duplicate=duplicate,
    )


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> Settings:
    return service_settings(
        Settings,
        bootstrap=kafka_bootstrap,
        database_url=database_url,
        data_dir=tmp_path,
        send_interval_s=0.1,
        quiet_hours_start=0,
        quiet_hours_end=0,  # quiet hours have their own test
    )


@pytest.fixture
async def nurture(settings: Settings):
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


def mail_dir(settings: Settings) -> Path:
    return settings.data_dir / "mail" / "nurture"


async def steps(svc, lead_id: uuid.UUID, sequence: str = "welcome") -> list[ScheduledMessage]:
    async with svc.runtime.uow.sessions() as session:
        rows = await session.scalars(
            select(ScheduledMessage)
            .where(ScheduledMessage.lead_id == lead_id, ScheduledMessage.sequence == sequence)
            .order_by(ScheduledMessage.step)
        )
        return list(rows)


async def emitted(svc, lead_id: uuid.UUID, event_type: str) -> int:
    """Events recorded for publication (nothing is published that is not in the outbox)."""
    async with svc.runtime.uow.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.key == str(lead_id).encode(), OutboxRow.event_type == event_type)
        )
        return count or 0


async def applied(svc, event_id: uuid.UUID) -> bool:
    async with svc.runtime.uow.sessions() as session:
        return await session.get(InboxRow, event_id) is not None


async def send(bootstrap: str, *envelopes: ev.Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def test_captured_lead_gets_the_welcome_email(nurture, settings: Settings, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    payload = captured(language="bn")
    await send(kafka_bootstrap, event("lead.captured", payload, lead_id=lead_id, producer_name="leads"))

    async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
        (sent,) = await reader.wait_for("email.sent", lead_id=lead_id)
    data = ev.EmailSent.model_validate(sent.data)
    assert (data.sequence, data.step, data.template, data.category) == ("welcome", 0, "welcome", "marketing")
    assert sent.producer == "nurture" and "স্বাগতম" in data.subject

    eml = mail_dir(settings) / f"{data.message_id}.eml"
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert str(data.message_id) in parsed["Message-ID"]
    assert parsed["To"].addresses[0].addr_spec == payload.email
    assert parsed["List-Unsubscribe"].startswith(f"<{settings.public_url}/unsubscribe?token=")
    assert parsed["Subject"] == data.subject

    listed = as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))
    assert [(m["message_id"], m["sequence"], m["step"], m["template"], m["category"]) for m in listed] == [
        (str(data.message_id), "welcome", 0, "welcome", "marketing")
    ]
    assert listed[0]["subject"] == data.subject and listed[0]["sent_at"]
    later = [(s.step, s.status) for s in await steps(nurture, lead_id)]
    assert later == [(0, "sent"), (1, "pending")]
    metrics = (await nurture.client.get("/metrics")).text
    # At least ours: the group may also read leads captured by other tests on this broker.
    sent_total = re.search(
        r'^clientflow_nurture_emails_sent_total\{category="marketing",sequence="welcome",step="0"\} (\S+)$',
        metrics,
        re.M,
    )
    assert sent_total is not None and float(sent_total.group(1)) >= 1
    # NaN until the sender's first pass has counted (a check waiting for 0 must not pass at
    # start-up); a number once a pass has run, as one has to send the welcome.
    depth = re.search(r"^clientflow_nurture_queue_depth (\S+)$", metrics, re.M)
    assert depth is not None and float(depth.group(1)) >= 0


async def test_redelivered_capture_sends_nothing_twice(nurture, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    envelope = event("lead.captured", captured(), lead_id=lead_id, producer_name="leads")
    await send(kafka_bootstrap, envelope, envelope)  # a redelivery: same event_id

    async def duplicate_seen() -> bool:
        text = (await nurture.client.get("/metrics")).text
        return 'outcome="duplicate",service="nurture",topic="leads",type="lead.captured"' in text

    await eventually(duplicate_seen)
    async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
        await reader.wait_for("email.sent", lead_id=lead_id)
    assert [s.step for s in await steps(nurture, lead_id)] == [0, 1]
    assert len(as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))) == 1
    assert await emitted(nurture, lead_id, "email.sent") == 1


async def test_duplicate_touch_is_not_enrolled(nurture, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    touch = event("lead.captured", captured(duplicate=True), lead_id=lead_id, producer_name="leads")
    await send(kafka_bootstrap, touch)
    await eventually(lambda: applied(nurture, touch.event_id))
    assert await steps(nurture, lead_id) == []


async def test_no_consent_means_no_marketing_email(nurture, settings: Settings, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, event("lead.captured", captured(consent=False), lead_id=lead_id, producer_name="leads"))

    async def suppressed() -> ScheduledMessage | None:
        found = await steps(nurture, lead_id)
        return found[0] if found and found[0].status == "suppressed" else None

    step = await eventually(suppressed)
    assert step.reason == "no_consent" and step.sent_at is None
    assert as_json(await nurture.client.get(f"/leads/{lead_id}/messages")) == []
    assert await emitted(nurture, lead_id, "email.sent") == 0
    assert not (mail_dir(settings) / f"{step.id}.eml").exists()
    metrics = (await nurture.client.get("/metrics")).text
    assert 'clientflow_nurture_emails_suppressed_total{reason="no_consent"}' in metrics


async def test_takeover_holds_due_steps_and_release_sends_them(settings: Settings, kafka_bootstrap: str) -> None:
    # A long interval: every send below happens because a commit or the clock woke the sender.
    settings = settings.model_copy(update={"send_interval_s": 60.0})
    start = datetime.now(UTC)
    clock = ManualClock(start)
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        lead_id = uuid.uuid4()
        await send(kafka_bootstrap, event("lead.captured", captured(), lead_id=lead_id, producer_name="leads"))
        async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
            await reader.wait_for("email.sent", lead_id=lead_id, timeout=15)

            taken = await svc.client.post(
                f"/leads/{lead_id}/takeover", json={"by": "maria", "reason": "asked for a call"}
            )
            assert taken.status_code == 201, taken.text
            assert taken.json()["active"] is True and taken.json()["by"] == "maria"
            again = await svc.client.post(f"/leads/{lead_id}/takeover", json={"by": "joe"})
            assert again.status_code == 409 and "maria" in again.text

            clock.advance_to(start + FOLLOW_UP + timedelta(minutes=1))

            async def held() -> bool:
                metrics = (await svc.client.get("/metrics")).text
                return "clientflow_nurture_queue_depth 1.0" in metrics

            await eventually(held)  # the sender ran at the new time and left the step waiting
            assert [(s.step, s.status) for s in await steps(svc, lead_id)] == [(0, "sent"), (1, "pending")]
            assert len(as_json(await svc.client.get(f"/leads/{lead_id}/messages"))) == 1

            released = as_json(await svc.client.delete(f"/leads/{lead_id}/takeover", params={"by": "maria"}))
            assert released["active"] is False and released["ended_by"] == "maria"
            assert (await svc.client.delete(f"/leads/{lead_id}/takeover")).status_code == 409
            sent = await reader.wait_for("email.sent", lead_id=lead_id, count=2, timeout=15)
            assert sorted(ev.EmailSent.model_validate(e.data).step for e in sent) == [0, 1]
            (started,) = await reader.wait_for("takeover.started", lead_id=lead_id)
            (ended,) = await reader.wait_for("takeover.ended", lead_id=lead_id)
        assert ev.TakeoverStarted.model_validate(started.data).by == "maria"
        assert ev.TakeoverEnded.model_validate(ended.data).by == "maria"
        listed = as_json(await svc.client.get(f"/leads/{lead_id}/messages"))
        assert [m["step"] for m in listed] == [0, 1]


async def test_restart_neither_loses_nor_repeats_a_step(settings: Settings, kafka_bootstrap: str) -> None:
    start = datetime.now(UTC)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with run_service(create_app(settings, clock=ManualClock(start)), settings.port) as svc:
        await send(kafka_bootstrap, event("lead.captured", captured(), lead_id=first, producer_name="leads"))
        async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
            await reader.wait_for("email.sent", lead_id=first)
    # While the service is down a new lead arrives; when it is back its follow-up is due.
    await send(kafka_bootstrap, event("lead.captured", captured(), lead_id=second, producer_name="leads"))
    later = ManualClock(start + FOLLOW_UP + timedelta(minutes=1))
    async with run_service(create_app(settings, clock=later), settings.port) as svc:

        async def all_sent() -> bool:
            a = as_json(await svc.client.get(f"/leads/{first}/messages")) if await steps(svc, first) else []
            b = as_json(await svc.client.get(f"/leads/{second}/messages")) if await steps(svc, second) else []
            return len(a) >= 2 and len(b) >= 1

        await eventually(all_sent, timeout=30)
        assert [m["step"] for m in as_json(await svc.client.get(f"/leads/{first}/messages"))] == [0, 1]
        assert [(s.step, s.status) for s in await steps(svc, second)] == [(0, "sent"), (1, "pending")]
        assert await emitted(svc, first, "email.sent") == 2
        assert await emitted(svc, second, "email.sent") == 1
        ids = [s.id for s in await steps(svc, first)]
    assert all((mail_dir(settings) / f"{i}.eml").exists() for i in ids)


async def test_erasure_removes_personal_data_and_stops_sending(nurture, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, event("lead.captured", captured(), lead_id=lead_id, producer_name="leads"))
    async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
        await reader.wait_for("email.sent", lead_id=lead_id)

    erased = ev.LeadErased(requested_at=datetime.now(UTC))
    erase = event("lead.erased", erased, lead_id=lead_id, producer_name="leads")
    comeback = event("lead.captured", captured(), lead_id=lead_id, producer_name="leads")  # late, new event id
    await send(kafka_bootstrap, erase, comeback)
    await eventually(lambda: applied(nurture, comeback.event_id))

    async with nurture.runtime.uow.sessions() as session:
        contact = await session.get(Contact, lead_id)
        assert contact is not None and contact.erased_at is not None
        assert (contact.name, contact.email) == (None, None)
        (message,) = list(await session.scalars(select(Message).where(Message.lead_id == lead_id)))
        assert (message.to_address, message.subject, message.body_text) == (None, None, None)
        assert (message.sequence, message.step) == ("welcome", 0)  # the anonymous fact stays
    assert [(s.step, s.status, s.reason) for s in await steps(nurture, lead_id)] == [
        (0, "sent", None),
        (1, "cancelled", "erased"),
    ]
    listed = as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))
    assert len(listed) == 1 and listed[0]["subject"] is None


async def test_won_deal_ends_the_welcome_sequence(nurture, kafka_bootstrap: str) -> None:
    lead_id = uuid.uuid4()
    await send(kafka_bootstrap, event("lead.captured", captured(), lead_id=lead_id, producer_name="leads"))
    async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
        await reader.wait_for("email.sent", lead_id=lead_id)
    won = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Site",
        kind="project",
        currency="GBP",
        total=Decimal("3000"),
        signed_by="Ada",
        signed_at=datetime.now(UTC),
        deposit_share=Decimal("0.30"),
    )
    deal = event("deal.won", won, lead_id=lead_id, producer_name="leads")
    await send(kafka_bootstrap, deal)
    await eventually(lambda: applied(nurture, deal.event_id))
    assert [(s.step, s.status, s.reason) for s in await steps(nurture, lead_id)] == [
        (0, "sent", None),
        (1, "cancelled", "deal.won"),
    ]


async def test_http_errors_are_clear(nurture) -> None:
    unknown = uuid.uuid4()
    assert (await nurture.client.get(f"/leads/{unknown}/messages")).status_code == 404
    missing = await nurture.client.post(f"/leads/{unknown}/takeover", json={"by": "maria"})
    assert missing.status_code == 404 and str(unknown) in missing.text
    assert (await nurture.client.delete(f"/leads/{unknown}/takeover")).status_code == 404
    noauth = await nurture.client.post(
        f"/leads/{unknown}/takeover", json={"by": "maria"}, headers={"Authorization": "Bearer wrong"}
    )
    assert noauth.status_code == 401
    bad = await nurture.client.post(f"/leads/{unknown}/takeover", json={"by": ""})
    assert bad.status_code == 422

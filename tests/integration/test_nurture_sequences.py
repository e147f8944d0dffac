"""Nurture's built-in sequences, tracking, consent, cap, quiet hours, takeover, feedback and
tasks, against a real broker, a real database and a real SMTP server (aiosmtpd, in process)."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from services.nurture.app import create_app
from services.nurture.settings import Settings
from services.nurture.store import Feedback, ScheduledMessage, Task
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from shared.db import InboxRow
from shared.embedded import free_port
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


class ManualClock(SimulatedClock):
    """Business time moved only by the test (not ``simulated``: the clock topic is not read)."""

    simulated = False


class Inbox:
    """An SMTP server's handler: keeps what it accepts; refuses the first ``fail_first`` with 451
    (only those to ``fail_to`` when set: the session's broker also carries earlier tests' events,
    whose mail must not take the refusal meant for this test's person)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[email.message.EmailMessage] = []
        self.fail_first = fail_first
        self.fail_to: str | None = None
        self.refused = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        targeted = self.fail_to is None or self.fail_to in envelope.rcpt_tos
        if targeted and self.refused < self.fail_first:
            self.refused += 1
            return "451 4.3.0 try again later"
        self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.received if m["To"].addresses[0].addr_spec == address]


@pytest.fixture
def smtp():
    inbox = Inbox(fail_first=1)
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def settings_for(kafka_bootstrap: str, database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict = {"data_dir": tmp_path, "send_interval_s": 0.2, "quiet_hours_start": 0, "quiet_hours_end": 0}
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url, **(values | overrides))
    return settings.model_copy(update={"public_url": f"http://127.0.0.1:{settings.port}"})


def captured(*, consent: bool, language: str = "en", tz: str = "Europe/London", segment: str = "ideal"):
    return ev.LeadCaptured(
        name="Ada Lovelace",
        email=f"{uuid.uuid4().hex[:10]}@analytical.example",
        language=language,
        timezone=tz,
        channel="website",
        consent_marketing=consent,
        fit_score=72,
        segment=segment,
    )


async def send(bootstrap: str, *envelopes: ev.Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


async def applied(svc, envelope: ev.Envelope) -> None:
    async def check() -> bool:
        async with svc.runtime.uow.sessions() as session:
            return await session.get(InboxRow, envelope.event_id) is not None

    await eventually(check, timeout=20)


async def rows(svc, lead_id: uuid.UUID, sequence: str) -> list[tuple[int, str, str | None]]:
    async with svc.runtime.uow.sessions() as session:
        found = await session.scalars(
            select(ScheduledMessage)
            .where(ScheduledMessage.lead_id == lead_id, ScheduledMessage.sequence == sequence)
            .order_by(ScheduledMessage.step)
        )
        return [(r.step, r.status, r.reason) for r in found]


async def sent_messages(svc, lead_id: uuid.UUID) -> list[tuple[str, int]]:
    return [(m["sequence"], m["step"]) for m in as_json(await svc.client.get(f"/leads/{lead_id}/messages"))]


async def capture(svc, bootstrap: str, lead_id: uuid.UUID, payload: ev.LeadCaptured) -> None:
    envelope = event("lead.captured", payload, lead_id=lead_id, producer_name="leads")
    await send(bootstrap, envelope)
    await applied(svc, envelope)


def won(lead_id: uuid.UUID) -> ev.Envelope:
    payload = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="New website",
        kind="project",
        currency="EUR",
        total=Decimal("3000"),
        signed_by="Ada",
        signed_at=T0,
        deposit_share=Decimal("0.30"),
        tier="good",
    )
    return event("deal.won", payload, lead_id=lead_id, producer_name="leads")


async def test_client_lifecycle_sequences_over_smtp(
    kafka_bootstrap: str, database_url: str, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """Onboarding, invoice reminders, a kind expired-card note, price notices 30 and 7 days
    ahead, the exit survey and win-back: transactional mail reaches a client who gave no marketing
    consent, marketing does not; a refused SMTP send is retried with backoff and sent once."""
    inbox, port = smtp
    settings = settings_for(
        kafka_bootstrap,
        database_url,
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,
        smtp_timeout_s=5,
        retry_base_s=60,
    )
    clock = ManualClock(T0)
    lead_id = uuid.uuid4()
    person = captured(consent=False, language="fa")
    inbox.fail_to = person.email
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        await capture(svc, kafka_bootstrap, lead_id, person)
        deal = won(lead_id)
        await send(kafka_bootstrap, deal)
        await applied(svc, deal)
        # The first SMTP attempt is refused (451): the step waits for its backoff, then goes once.
        await eventually(lambda: refused(inbox))
        await eventually(lambda: rows_are(svc, lead_id, "onboarding", 0, "pending"))
        assert inbox.to(person.email) == []
        clock.advance_to(T0 + timedelta(seconds=61))
        await eventually(lambda: has_subject(inbox, person.email, ""))
        (welcome,) = inbox.to(person.email)
        assert welcome["List-Unsubscribe"] and welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "New website" in welcome.get_body(("plain",)).get_content()
        assert (await rows(svc, lead_id, "welcome"))[0][1:] == ("suppressed", "no_consent")

        invoice_id = uuid.uuid4()
        issued = ev.InvoiceIssued(
            invoice_id=invoice_id,
            number="2030-000007",
            kind="deposit",
            deal_id=uuid.uuid4(),
            amount=Decimal("900"),
            currency="EUR",
            issued_at=clock.now(),
            due_at=clock.now() + timedelta(days=14),
        )
        failed = ev.PaymentFailed(
            invoice_id=invoice_id,
            amount=Decimal("900"),
            currency="EUR",
            method="card",
            decline_code="expired_card",
        )
        await send(
            kafka_bootstrap,
            event("invoice.issued", issued, lead_id=lead_id, producer_name="billing"),
            event("payment.failed", failed, lead_id=lead_id, producer_name="billing"),
        )
        await eventually(lambda: has_subject(inbox, person.email, "2030-000007"))
        note = await eventually(lambda: has_subject(inbox, person.email, "منقضی"))  # the fa expired-card note
        text = note.get_body(("plain",)).get_content()
        assert settings.payment_update_url.split("//")[1][:10] in re.sub(r"%2F", "/", re.sub(r"%3A", ":", text))
        assert "/t/c/" in text  # the link is tracked
        paid = ev.PaymentSucceeded(
            payment_id=uuid.uuid4(),
            invoice_id=invoice_id,
            amount=Decimal("900"),
            currency="EUR",
            method="card",
            paid_at=clock.now(),
            invoice_paid=True,
        )
        paid_event = event("payment.succeeded", paid, lead_id=lead_id, producer_name="billing")
        await send(kafka_bootstrap, paid_event)
        await applied(svc, paid_event)
        assert list(await rows(svc, lead_id, "invoice_reminders")) == [
            (0, "sent", None),
            (1, "cancelled", "payment.succeeded"),
            (2, "cancelled", "payment.succeeded"),
        ]
        assert (await rows(svc, lead_id, "payment_failed"))[1][1:] == ("cancelled", "payment.succeeded")

        change = ev.PriceChangeScheduled(
            subscription_id=uuid.uuid4(),
            old_price=Decimal("100"),
            new_price=Decimal("115"),
            currency="EUR",
            effective_at=clock.now() + timedelta(days=40),
        )
        price = event("price.change_scheduled", change, lead_id=lead_id, producer_name="billing")
        await send(kafka_bootstrap, price)
        await applied(svc, price)
        clock.advance_to(T0 + timedelta(days=10, minutes=2))  # 30 days before
        await eventually(lambda: has_subject(inbox, person.email, "۳۰ روز"))  # Persian digits
        clock.advance_to(T0 + timedelta(days=33, minutes=2))  # 7 days before
        await eventually(lambda: has_subject(inbox, person.email, "۷ روز"))  # noqa: RUF001

        done = ev.CancellationCompleted(cancellation_id=uuid.uuid4(), reason="budget", effective_at=clock.now())
        cancelled = event("cancellation.completed", done, lead_id=lead_id, producer_name="retention")
        await send(kafka_bootstrap, cancelled)
        await applied(svc, cancelled)
        clock.advance_to(T0 + timedelta(days=33, hours=2))
        # "Sorry to see you go", in Persian: the person's language, with Persian digits.
        survey = await eventually(lambda: has_subject(inbox, person.email, "از رفتنتان متأسفیم"))
        survey_link = re.search(r"۱۰: (\S+)", survey.get_body(("plain",)).get_content()).group(1)  # noqa: RUF001
        clock.advance_to(T0 + timedelta(days=80))
        await eventually(lambda: rows_are(svc, lead_id, "winback", 0, "suppressed"))
        assert (await rows(svc, lead_id, "winback"))[0][2] == "no_consent"

        # The survey link opens the question with 10 chosen (a scanner's GET answers nothing);
        # sending it answers, sending again replaces; the onboarding was ended by the cancellation.
        async with httpx.AsyncClient() as public:
            opened = await public.get(survey_link)
            opened_again = await public.get(survey_link)
            assert opened.status_code == opened_again.status_code == 200
            assert 'value="10" checked' in opened.text
            async with svc.runtime.uow.sessions() as session:
                assert await session.scalar(select(func.count()).select_from(Feedback)) == 0
            token = re.search(r'name="token" value="([^"]+)"', opened.text).group(1)
            form = {"token": token, "score": "10", "comment": ""}
            answered = await public.post(f"{svc.url}/feedback", data=form)
            again = await public.post(f"{svc.url}/feedback", data=form | {"score": "3", "comment": "slow"})
        assert answered.status_code == 200 and "نمرهٔ ۱۰ از ۱۰" in answered.text and "نمرهٔ ۳ از ۱۰" in again.text  # noqa: RUF001
        async with svc.runtime.uow.sessions() as session:
            answers = list(await session.execute(select(Feedback.score, Feedback.comment)))
            complaint_tasks = await session.scalar(
                select(func.count()).select_from(Task).where(Task.kind == "complaint")
            )
        assert answers == [(3, "slow")] and complaint_tasks == 1
        sent = await sent_messages(svc, lead_id)
        assert sent.count(("onboarding", 0)) == 1 and ("exit_survey", 0) in sent
        assert len(inbox.to(person.email)) == len(sent)  # nothing twice
        metrics = (await svc.client.get("/metrics")).text
        assert "clientflow_nurture_send_latency_seconds_count" in metrics
        assert "clientflow_nurture_send_failures_total 1.0" in metrics


async def refused(inbox: Inbox) -> bool:
    return inbox.refused == 1


async def rows_are(svc, lead_id: uuid.UUID, sequence: str, step: int, status: str) -> bool:
    found = await rows(svc, lead_id, sequence)
    return len(found) > step and found[step][1] == status


async def has_subject(inbox: Inbox, address: str, needle: str):
    for message in inbox.to(address):
        if needle in str(message["Subject"]):
            return message
    return None


async def test_tracking_unsubscribe_and_bad_tokens(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    """Open pixel, click redirect and one-click unsubscribe work through signed tokens; a forged
    token is a 404 with no side effect; an unsubscribe stops marketing and leaves invoices."""
    settings = settings_for(kafka_bootstrap, database_url, tmp_path, sales_ready_threshold=20)
    clock = ManualClock(T0)
    lead_id = uuid.uuid4()
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
            await capture(svc, kafka_bootstrap, lead_id, captured(consent=True, language="bn"))
            (sent,) = await reader.wait_for("email.sent", lead_id=lead_id)
            message_id = sent.data["message_id"]
            eml = email.message_from_bytes(
                (tmp_path / "mail" / "nurture" / f"{message_id}.eml").read_bytes(), policy=email.policy.default
            )
            body = eml.get_body(("html",)).get_content()
            pixel = re.search(r'src="([^"]+/t/o/[^"]+)"', body).group(1)
            unsubscribe_url = eml["List-Unsubscribe"].strip("<>")
            public = httpx.AsyncClient(follow_redirects=False)
            forged = pixel.replace(pixel.rsplit(".", 2)[-2][-4:], "AAAA")
            assert (await public.get(forged)).status_code == 404
            assert (await public.post(unsubscribe_url.replace("token=", "token=0"))).status_code == 404
            wrong_target = f"{settings.public_url}/t/c/{uuid.UUID(message_id).hex}.x?u=https://evil.example"
            assert (await public.get(wrong_target)).status_code == 404
            assert (await public.get(pixel)).status_code == 200
            (_opened,) = await reader.wait_for("email.opened", lead_id=lead_id)
            assert reader.events("lead.unsubscribed", lead_id) == []  # the forged ones did nothing

            # A click through a link made like the templates make it.
            click_url = svc.app.state.sender.links.click(uuid.UUID(message_id), "https://clientflow.example/x")
            went = await public.get(click_url)
            assert went.status_code == 302 and went.headers["location"] == "https://clientflow.example/x"
            (_clicked,) = await reader.wait_for("email.clicked", lead_id=lead_id)
            (ready,) = await reader.wait_for("lead.sales_ready", lead_id=lead_id)  # 5 + 15 >= 20, once
            assert ready.data["engagement_score"] >= 20

            page = await public.get(unsubscribe_url)  # the page asks; nothing happens yet
            assert page.status_code == 200 and "<form" in page.text
            assert (await public.post(unsubscribe_url, content=b"List-Unsubscribe=One-Click")).status_code == 200
            (unsubscribed,) = await reader.wait_for("lead.unsubscribed", lead_id=lead_id)
            assert unsubscribed.data["message_id"] == message_id
            assert (await public.post(unsubscribe_url)).status_code == 200  # twice: still one event
            assert (await rows(svc, lead_id, "welcome"))[1][1:] == ("cancelled", "lead.unsubscribed")

            issued = ev.InvoiceIssued(
                invoice_id=uuid.uuid4(),
                number="2030-000099",
                kind="deposit",
                amount=Decimal("50"),
                currency="EUR",
                issued_at=T0,
                due_at=T0 + timedelta(days=14),
            )
            await send(kafka_bootstrap, event("invoice.issued", issued, lead_id=lead_id, producer_name="billing"))
            await reader.wait_for("email.sent", lead_id=lead_id, count=2)
            await public.aclose()
            await reader._poll()
            assert len(reader.events("lead.unsubscribed", lead_id)) == 1
            assert len(reader.events("lead.sales_ready", lead_id)) == 1
        metrics = (await svc.client.get("/metrics")).text
        assert 'clientflow_nurture_emails_opened_total{sequence="welcome",step="0"} 1.0' in metrics
        assert 'clientflow_nurture_unsubscribed_total{sequence="welcome",step="0"} 1.0' in metrics


async def test_cap_quiet_hours_and_step_conditions(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    """At most N marketing emails a week across sequences; nothing scheduled at night where the
    person lives."""
    settings = settings_for(
        kafka_bootstrap,
        database_url,
        tmp_path,
        marketing_cap_per_week=1,
        quiet_hours_start=21,
        quiet_hours_end=8,
    )
    clock = ManualClock(T0)  # noon UTC = 15:30 in Tehran
    lead_id = uuid.uuid4()
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        extra = {
            "trigger": "lead.qualified",
            "category": "marketing",
            "steps": [
                {"template": "nurture_guide", "delay": "1m"},
                {"template": "nurture_checkin", "delay": "1m", "if": "not_opened_previous"},
            ],
        }
        assert (await svc.client.put("/sequences/extra_tips", json=extra)).status_code == 200
        await capture(svc, kafka_bootstrap, lead_id, captured(consent=True, tz="Asia/Tehran"))
        await eventually(lambda: rows_are(svc, lead_id, "welcome", 0, "sent"))
        qualified = event(
            "lead.qualified",
            ev.LeadQualified(budget=True, authority=True, need=True, timeline=True),
            lead_id=lead_id,
            producer_name="leads",
        )
        await send(kafka_bootstrap, qualified)
        await applied(svc, qualified)
        clock.advance_to(T0 + timedelta(minutes=5))

        async def deferred() -> ScheduledMessage | None:
            async with svc.runtime.uow.sessions() as session:
                row = await session.scalar(
                    select(ScheduledMessage).where(
                        ScheduledMessage.lead_id == lead_id,
                        ScheduledMessage.sequence == "extra_tips",
                        ScheduledMessage.step == 0,
                    )
                )
                return row if row is not None and row.due_at > T0 + timedelta(days=6) else None

        row = await eventually(deferred)  # over the cap: moved to when the welcome leaves the week
        assert row.status == "pending" and row.due_at == T0 + timedelta(days=7)

        # A week later, 19:00 UTC is 22:30 in Tehran: quiet; it goes at 08:00 Tehran time.
        clock.advance_to(T0 + timedelta(days=7, hours=7))
        quiet_end = datetime(2030, 1, 15, 4, 30, tzinfo=UTC)

        async def moved_to_morning() -> bool:
            async with svc.runtime.uow.sessions() as session:
                again = await session.get(ScheduledMessage, row.id)
                return again is not None and again.due_at == quiet_end

        await eventually(moved_to_morning)
        clock.advance_to(quiet_end + timedelta(minutes=1))

        # The welcome follow-up (and nurture, started by lead.qualified) waited out the night too; at 08:00 only one of the
        # marketing emails may go (cap 1 a week, across sequences), the other waits a week.
        async def one_went() -> list[ScheduledMessage] | None:
            async with svc.runtime.uow.sessions() as session:
                found = list(
                    await session.scalars(
                        select(ScheduledMessage).where(
                            ScheduledMessage.lead_id == lead_id,
                            ScheduledMessage.due_at >= quiet_end,
                            ScheduledMessage.sequence.in_(["extra_tips", "welcome", "nurture"]),
                        )
                    )
                )
            statuses = sorted(r.status for r in found)
            return (
                found
                if statuses.count("sent") == 1
                and any(r.status == "pending" and r.due_at >= quiet_end + timedelta(days=6) for r in found)
                else None
            )

        await eventually(one_went)
        sent = list(as_json(await svc.client.get(f"/leads/{lead_id}/messages")))
        assert len(sent) == 2  # the welcome, then one more a week later
        metrics = (await svc.client.get("/metrics")).text
        assert 'clientflow_nurture_steps_deferred_total{reason="frequency_cap"}' in metrics
        assert 'clientflow_nurture_steps_deferred_total{reason="quiet_hours"}' in metrics


async def test_reply_takeover_feedback_and_tasks(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    """An inbound reply starts a takeover by itself and ends the welcome; a high-value reply and a
    churn risk become tasks; a complaint is published, counted and followed up."""
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    clock = ManualClock(T0)
    lead_id = uuid.uuid4()
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        async with TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader:
            person = captured(consent=True)
            await capture(svc, kafka_bootstrap, lead_id, person)
            (sent,) = await reader.wait_for("email.sent", lead_id=lead_id)
            reply = await svc.client.post(
                "/webhooks/inbound",
                json={
                    "from": person.email,
                    "in_reply_to": f"<{sent.data['message_id']}@clientflow.example>",
                    "subject": "Re: Welcome",
                    "text": "Can we talk about a quote?",
                },
            )
            assert reply.status_code == 201 and reply.json()["takeover_started"] and reply.json()["task_id"]
            (started,) = await reader.wait_for("takeover.started", lead_id=lead_id)
            assert started.data["by"] == "inbound-reply"
            assert (await rows(svc, lead_id, "welcome"))[1][1:] == ("cancelled", "reply")
            # While the takeover lasts even transactional email waits.
            deal = won(lead_id)
            await send(kafka_bootstrap, deal)
            await applied(svc, deal)
            clock.advance_to(T0 + timedelta(minutes=1))
            await eventually(lambda: rows_are(svc, lead_id, "onboarding", 0, "pending"))
            assert await sent_messages(svc, lead_id) == [("welcome", 0)]

            risk = event(
                "churn_risk.raised",
                ev.ChurnRiskRaised(reasons=["late payments"]),
                lead_id=lead_id,
                producer_name="retention",
            )
            await send(kafka_bootstrap, risk)
            await applied(svc, risk)
            complaint = await svc.client.post(
                "/feedback", json={"lead_id": str(lead_id), "survey": "onboarding", "score": 3, "comment": "slow"}
            )
            assert complaint.status_code == 201 and complaint.json()["complaint"] is True
            (received,) = await reader.wait_for("feedback.received", lead_id=lead_id)
            assert received.data["complaint"] is True and received.data["score"] == 3
            assert (
                await svc.client.post(
                    "/feedback",
                    json={"lead_id": str(lead_id), "survey": "x", "score": 9},
                    headers={"Authorization": "Bearer nope"},
                )
            ).status_code == 401
            tasks = as_json(await svc.client.get("/tasks", params={"lead_id": str(lead_id)}))
            assert sorted(t["kind"] for t in tasks) == ["churn_risk", "complaint", "reply"]
            assert any("can we help?" in t["title"] for t in tasks)

            assert (await svc.client.delete(f"/leads/{lead_id}/takeover")).status_code == 200
            await eventually(lambda: rows_are(svc, lead_id, "onboarding", 0, "sent"))
        metrics = (await svc.client.get("/metrics")).text
        assert "clientflow_nurture_complaints_total 1.0" in metrics


async def test_sequences_are_data_and_bad_ones_are_refused(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    async with run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc:
        welcome = as_json(await svc.client.get("/sequences/welcome"))
        assert welcome["trigger"] == "lead.captured" and welcome["source"] == "builtin"
        assert {s["name"] for s in as_json(await svc.client.get("/sequences"))} >= {
            "welcome",
            "nurture",
            "onboarding",
            "invoice_reminders",
            "payment_failed",
            "price_change",
            "exit_survey",
            "winback",
            "later",
        }
        good = {
            "trigger": "deal.lost",
            "steps": [{"template": "later_checkin", "delay": "30d"}],
            "exit_on": ["deal_won", "reply"],
            "reentry": {"after": "90d"},
            "when": {"tier": ["best", "good"]},
        }
        cases = {
            "unknown trigger": ({**good, "trigger": "lead.teleported"}, "trigger"),
            "missing template": ({**good, "steps": [{"template": "nope", "delay": 0}]}, "nope"),
            "bad delay": ({**good, "steps": [{"template": "later_checkin", "delay": "soon"}]}, "delay"),
            "cycle": ({**good, "then": "welcome"}, "cycle"),
        }
        # welcome -> nurture; making nurture go back to welcome is a cycle.
        for name, (body, reason) in cases.items():
            target = "nurture" if name == "cycle" else "vip_later"
            refused = await svc.client.put(f"/sequences/{target}", json=body)
            assert refused.status_code == 422 and reason in refused.text, (name, refused.text)
        assert (
            await svc.client.put("/sequences/vip_later", json=good, headers={"Authorization": "Bearer x"})
        ).status_code == 401
        stored = as_json(await svc.client.put("/sequences/vip_later", json=good))
        assert stored["source"] == "api" and stored["definition"]["reentry"] == {"after": "90d"}
        assert as_json(await svc.client.get("/sequences/vip_later"))["trigger"] == "deal.lost"
        assert (await svc.client.get("/sequences/nothing")).status_code == 404

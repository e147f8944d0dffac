"""Nurture in batches: a consumed batch and a sender pass cost a few SQL statements, not several
per event or e-mail, and end exactly where applying the same things one at a time ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.nurture import sending
from services.nurture.app import create_app
from services.nurture.settings import Settings
from services.nurture.store import Base, Contact, Enrollment, Message, ScheduledMessage, Takeover, Task
from services.nurture.transport import PermanentFailure
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import InboxRow, OutboxRow, PlumbingBase, create_engine, statement_log
from tests.unit.test_outbox_inbox import record

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


class ManualClock(SimulatedClock):
    """Business time moved only by the test (not ``simulated``: no clock topic is read)."""

    simulated = False


class FakeTransport:
    """Keeps what it is given; refuses for now (or for good) the addresses it is told to."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.busy: set[str] = set()
        self.refused: set[str] = set()

    async def send(self, message: EmailMessage) -> None:
        to = message["To"].addresses[0].addr_spec
        if to in self.refused:
            raise PermanentFailure("550 no such mailbox")
        if to in self.busy:
            raise ConnectionError("451 try again later")
        self.sent.append(message)


class Statements:
    def __init__(self, engine: Any) -> None:
        self.seen = statement_log(engine)


@dataclass
class Nurture:
    app: Any
    clock: ManualClock
    transport: FakeTransport
    statements: Statements

    @property
    def uow(self) -> Any:
        return self.app.state.runtime.uow

    async def consume(self, events: list[ev.Envelope]) -> None:
        records = [record(e, i, topic=ev.topic_of(e.type)) for i, e in enumerate(events)]
        await self.app.state.runtime._consumer.handle(records)

    def metric(self, name: str, **labels: str) -> float:
        return self.app.state.runtime.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    engines = []

    async def build(name: str = "nurture", **overrides: Any) -> Nurture:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        engines.append(engine)
        async with engine.begin() as conn:
            await conn.run_sync(PlumbingBase.metadata.create_all)
            await conn.run_sync(Base.metadata.create_all)
        values = {"quiet_hours_start": 0, "quiet_hours_end": 0, "retry_base_s": 60.0} | overrides
        settings = Settings(
            database_url="sqlite+aiosqlite://", data_dir=tmp_path / name, migrate_on_start=False, **values
        )
        clock, transport = ManualClock(T0), FakeTransport()
        app = create_app(settings, engine=engine, clock=clock, transport=transport)
        return Nurture(app, clock, transport, Statements(engine))

    yield build
    for engine in engines:
        await engine.dispose()


def happened(event_type: str, payload: Any, lead_id: uuid.UUID) -> ev.Envelope:
    return ev.make_event(event_type, payload, producer="test", occurred_at=T0, lead_id=lead_id)


def captured(n: int, *, consent: bool = True, duplicate: bool = False) -> ev.LeadCaptured:
    return ev.LeadCaptured(
        name=f"Person {n}",
        email=f"p{n}@batch.example",
        language="en",
        timezone="UTC",
        channel="website",
        consent_marketing=consent,
        fit_score=70,
        segment="ideal",
        duplicate=duplicate,
    )


def won() -> ev.DealWon:
    return ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Site",
        kind="project",
        currency="EUR",
        total=Decimal("3000"),
        signed_by="Ada",
        signed_at=T0,
        deposit_share=Decimal("0.30"),
        tier="good",
    )


def issued(invoice_id: uuid.UUID) -> ev.InvoiceIssued:
    return ev.InvoiceIssued(
        invoice_id=invoice_id,
        number=f"2030-{invoice_id.hex[:6]}",
        kind="deposit",
        amount=Decimal("900"),
        currency="EUR",
        issued_at=T0,
        due_at=T0 + timedelta(days=14),
    )


def paid(invoice_id: uuid.UUID) -> ev.PaymentSucceeded:
    return ev.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        invoice_id=invoice_id,
        amount=Decimal("900"),
        currency="EUR",
        method="card",
        paid_at=T0,
        invoice_paid=True,
    )


def story() -> list[ev.Envelope]:
    """Events that meet rows made earlier in the same batch: a profile changed after the capture,
    a second capture, a won deal ending the welcome, an erasure between two captures, a tombstone
    before the capture, invoices with per-invoice re-entry, a repeated event, a churn risk."""
    a, b, c, d, e, f = (uuid.uuid4() for _ in range(6))
    invoice, other = uuid.uuid4(), uuid.uuid4()
    repeated = happened("lead.captured", captured(5), e)
    return [
        happened("lead.captured", captured(1), a),
        happened(
            "lead.stage_changed",
            ev.LeadStageChanged(from_stage="awareness", to_stage="interest", cause="lead.qualified"),
            a,
        ),
        happened("lead.captured", captured(1), a),
        happened("deal.won", won(), a),
        happened("lead.captured", captured(2), b),
        happened("lead.erased", ev.LeadErased(requested_at=T0), b),
        happened("lead.captured", captured(2), b),
        happened("lead.erased", ev.LeadErased(requested_at=T0), c),
        happened("lead.captured", captured(3), c),
        happened("lead.captured", captured(4, consent=False), d),
        happened("invoice.issued", issued(invoice), d),
        happened("invoice.issued", issued(other), d),
        happened("payment.succeeded", paid(invoice), d),
        repeated,
        repeated,
        happened("lead.captured", captured(6, duplicate=True), f),
        happened("churn_risk.raised", ev.ChurnRiskRaised(reasons=["late payments"]), f),
    ]


async def snapshot(nurture: Nurture) -> dict[str, Any]:
    """The state, by lead, without the ids each run draws at random."""
    async with nurture.uow.sessions() as session:
        contacts = {
            c.lead_id: (c.name, c.email, c.stage, c.tier, c.consent_marketing, c.erased_at)
            for c in await session.scalars(select(Contact))
        }
        enrollments = sorted(
            (e.lead_id.hex, e.sequence, e.key, e.status, e.ended_reason or "", str(e.context))
            for e in await session.scalars(select(Enrollment))
        )
        steps = sorted(
            (s.lead_id.hex, s.sequence, s.step, s.status, s.reason or "", s.due_at.isoformat())
            for s in await session.scalars(select(ScheduledMessage))
        )
        tasks = sorted((t.lead_id.hex, t.kind, t.title) for t in await session.scalars(select(Task)))
        inbox = len(list(await session.scalars(select(InboxRow.event_id))))
    return {"contacts": contacts, "enrollments": enrollments, "steps": steps, "tasks": tasks, "inbox": inbox}


async def test_a_batch_ends_where_the_same_events_one_at_a_time_end(make) -> None:
    events = story()
    together, alone = await make("together"), await make("alone")
    await together.consume(events)
    for one in events:
        await alone.consume([one])  # a batch of one: no prefetch, as after a failed batch
    expected = await snapshot(alone)
    assert await snapshot(together) == expected
    assert expected["inbox"] == len(events) - 1  # the repeated event applied once
    assert any(status == "cancelled" and seq == "welcome" for _, seq, _, status, *_ in expected["steps"])


async def test_a_consumed_batch_costs_a_few_statements_not_several_per_event(make) -> None:
    nurture = await make()
    events = [happened("lead.captured", captured(n), uuid.uuid4()) for n in range(200)]
    await nurture.consume(events)
    per_event = len(nurture.statements.seen) / len(events)
    assert per_event < 0.1, nurture.statements.seen  # was 8: two contact reads, two enrollment reads...
    async with nurture.uow.sessions() as session:
        pending = list(await session.scalars(select(ScheduledMessage).where(ScheduledMessage.status == "pending")))
    assert len(pending) == 400  # welcome's two steps each


async def test_a_sender_pass_claims_and_records_in_batches(make) -> None:
    nurture = await make(send_batch_size=50)
    count = 120
    await nurture.consume([happened("lead.captured", captured(n), uuid.uuid4()) for n in range(count)])
    nurture.statements.seen.clear()
    await nurture.app.state.sender.tick(T0)
    # Was 10 statements an e-mail: a claim, reads and a transaction per e-mail.
    assert len(nurture.statements.seen) / count < 0.5, nurture.statements.seen
    assert len(nurture.transport.sent) == count
    async with nurture.uow.sessions() as session:
        steps = list(await session.scalars(select(ScheduledMessage).where(ScheduledMessage.step == 0)))
        messages = list(await session.scalars(select(Message)))
        announced = list(await session.scalars(select(OutboxRow.event_type)))
    assert {(s.status, s.attempts, s.claimed_until) for s in steps} == {("sent", 1, None)}
    assert sorted(m.message_id for m in messages) == sorted(s.id for s in steps)
    assert announced.count("email.sent") == count
    assert (
        nurture.metric("clientflow_nurture_emails_sent_total", sequence="welcome", step="0", category="marketing")
        == count
    )
    await nurture.app.state.sender.tick(T0)  # nothing twice
    assert len(nurture.transport.sent) == count


async def test_each_outcome_of_a_mixed_batch_is_recorded_as_alone(make) -> None:
    nurture = await make()
    leads = {name: uuid.uuid4() for name in ("sent", "no_consent", "busy", "refused")}
    nurture.transport.busy.add("p2@batch.example")
    nurture.transport.refused.add("p3@batch.example")
    await nurture.consume(
        [
            happened("lead.captured", captured(0), leads["sent"]),
            happened("lead.captured", captured(1, consent=False), leads["no_consent"]),
            happened("lead.captured", captured(2), leads["busy"]),
            happened("lead.captured", captured(3), leads["refused"]),
        ]
    )
    sender = nurture.app.state.sender
    await sender.tick(T0)

    async def first_steps() -> dict[str, tuple[str, str | None, int, datetime | None]]:
        async with nurture.uow.sessions() as session:
            rows = await session.scalars(select(ScheduledMessage).where(ScheduledMessage.step == 0))
            by_lead = {r.lead_id: (r.status, r.reason, r.attempts, r.claimed_until) for r in rows}
        return {name: by_lead[lead] for name, lead in leads.items()}

    assert await first_steps() == {
        "sent": ("sent", None, 1, None),
        "no_consent": ("suppressed", "no_consent", 1, None),
        "busy": ("pending", None, 1, T0 + timedelta(seconds=60)),  # backoff: claimed until the retry
        "refused": ("suppressed", "bounced", 1, None),
    }
    async with nurture.uow.sessions() as session:
        bounced = await session.get(Contact, leads["refused"])
        ended = await session.scalar(
            select(ScheduledMessage.status).where(
                ScheduledMessage.lead_id == leads["refused"], ScheduledMessage.step == 1
            )
        )
    assert bounced is not None and bounced.bounced_at == T0 and ended == "cancelled"
    assert nurture.metric("clientflow_nurture_emails_suppressed_total", reason="no_consent") == 1
    assert nurture.metric("clientflow_nurture_emails_bounced_total", sequence="welcome", step="0") == 1
    assert nurture.metric("clientflow_nurture_send_failures_total") == 1

    await sender.tick(T0)  # the retry waits for its backoff
    assert len(nurture.transport.sent) == 1
    nurture.transport.busy.clear()
    nurture.clock.advance_to(T0 + timedelta(seconds=61))
    await sender.tick(nurture.clock.now())
    assert (await first_steps())["busy"][:3] == ("sent", None, 2)
    assert len(nurture.transport.sent) == 2


async def test_a_record_that_fails_does_not_undo_the_others(make, monkeypatch) -> None:
    nurture = await make()
    ok, busy = uuid.uuid4(), uuid.uuid4()
    nurture.transport.busy.add("p1@batch.example")
    await nurture.consume([happened("lead.captured", captured(0), ok), happened("lead.captured", captured(1), busy)])

    async def broken(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("cannot record a failure")

    monkeypatch.setattr(sending, "record_failure", broken)
    # The one that cannot be recorded is a job failure now, held with backoff: the pass goes on
    # (tests/unit/test_job_isolation.py); it used to raise here and end the pass.
    await nurture.app.state.sender.tick(T0)
    async with nurture.uow.sessions() as session:
        recorded = list(await session.scalars(select(Message.lead_id)))
    assert recorded == [ok]  # sent, so recorded, though its batch could not be recorded whole


async def test_the_claim_keeps_the_weekly_cap_within_a_batch_and_holds_taken_over_people(make) -> None:
    nurture = await make(marketing_cap_per_week=1)
    person, held = uuid.uuid4(), uuid.uuid4()
    async with nurture.uow() as tx:
        for lead_id in (person, held):
            tx.session.add(
                Contact(
                    lead_id=lead_id,
                    name="Ada",
                    email=f"{lead_id.hex[:8]}@batch.example",
                    consent_marketing=True,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            for step in (0, 1):
                tx.session.add(
                    ScheduledMessage(
                        id=uuid.uuid4(),
                        lead_id=lead_id,
                        sequence="extra",
                        step=step,
                        template="welcome",
                        category="marketing",
                        due_at=T0 - timedelta(minutes=step),
                        status="pending",
                        attempts=0,
                    )
                )
        tx.session.add(Takeover(id=uuid.uuid4(), lead_id=held, by="maria", started_at=T0))
    lease = timedelta(minutes=2)
    async with nurture.uow() as tx:
        first = await sending.claim_due_steps(tx, now=T0, limit=50, lease=lease, policy=nurture.app.state.sender.policy)
    assert [(s.lead_id, s.step, s.attempts) for s in first.claimed] == [(person, 1, 1)]  # the older one first
    assert first.deferred == ["frequency_cap"]
    async with nurture.uow() as tx:
        again = await sending.claim_due_steps(tx, now=T0 + timedelta(minutes=1), limit=50, lease=lease)
    assert again.claimed == []  # claimed by the first, and the other moved a week on
    async with nurture.uow() as tx:
        lapsed = await sending.claim_due_steps(tx, now=T0 + lease, limit=50, lease=lease)
    assert [(s.lead_id, s.step, s.attempts) for s in lapsed.claimed] == [(person, 1, 2)]


async def test_slow_sending_records_as_it_goes_before_the_claims_lapse(make) -> None:
    """Past half the lease, what was sent is recorded at once (another pass could otherwise
    claim it again when the lease ends and send it twice)."""
    nurture = await make(send_lease_s=120)
    await nurture.consume([happened("lead.captured", captured(n), uuid.uuid4()) for n in range(3)])
    recorded_before_each_send: list[int] = []
    send = nurture.transport.send

    async def slow(message: EmailMessage) -> None:
        async with nurture.uow.sessions() as session:
            recorded_before_each_send.append(len(list(await session.scalars(select(Message.message_id)))))
        await send(message)
        nurture.clock.advance_to(nurture.clock.now() + timedelta(seconds=70))

    nurture.transport.send = slow  # type: ignore[method-assign]
    await nurture.app.state.sender.tick(T0)
    assert recorded_before_each_send == [0, 1, 2]
    assert len(nurture.transport.sent) == 3

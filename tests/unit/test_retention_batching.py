"""Retention applies a batch in a few statements (its prefetch and per-transaction memo) and
ends exactly where applying the same events one by one ends."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import workloads
from services.retention import subscribers
from services.retention.app import MIGRATIONS
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import Base
from shared import events as ev
from shared.clock import SimulatedClock
from shared.consumer import BatchConsumer
from shared.db import create_engine, statement_log
from shared.events import Envelope, make_event, topic_of
from shared.metrics import PlumbingMetrics
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory
from tests.support import consumer_record, database_state
from tests.unit.test_outbox_inbox import FakeDeadLetters

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def record(value: bytes, topic: str, offset: int) -> ConsumerRecord:
    return consumer_record(value, topic=topic, offset=offset)


def records(envelopes: list[Envelope]) -> list[ConsumerRecord]:
    return [record(e.model_dump_json().encode(), topic_of(e.type), i) for i, e in enumerate(envelopes)]


async def consumer_on(url: str, tmp_path) -> tuple[BatchConsumer, AsyncEngine, FakeDeadLetters]:
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    uow = UnitOfWorkFactory(engine, producer="retention", clock=SimulatedClock(T0))
    metrics = RetentionMetrics(CollectorRegistry(), uow.sessions)
    metrics.request_refresh = lambda: None  # type: ignore[method-assign] # gauges are not under test
    ctx = Context(settings=Settings(database_url=url, data_dir=tmp_path), metrics=metrics)
    dead = FakeDeadLetters()
    consumer = BatchConsumer(
        service="retention",
        uow=uow,
        handlers=subscribers.handlers_for(ctx),
        dead_letters=dead,  # type: ignore[arg-type]
        metrics=PlumbingMetrics("retention", CollectorRegistry()),
        prefetch=subscribers.prefetch_for(ctx),
    )
    return consumer, engine, dead


async def test_the_benchmark_batch_costs_under_one_statement_per_event(tmp_path) -> None:
    """Each client's four events (captured, won, invoiced, paid) once cost 7 statements per
    event: the client re-read per event, every read flushing the changes before it."""
    consumer, engine, _ = await consumer_on(f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", tmp_path)
    batch = [record(m.value, m.topic, i) for i, m in enumerate(workloads.for_retention(400, random.Random(7)))]
    statements = statement_log(engine)
    await consumer.handle(batch)
    await engine.dispose()
    # SQLite inserts timeline rows one by one (it cannot return generated ids of a multi-row
    # insert in order): 300 of them; everything else is a handful of statements per table.
    assert len(statements) / len(batch) < 0.85, statements[:20]
    assert sum(1 for s in statements if s.startswith("SELECT")) <= 6


def at(minutes: int) -> datetime:
    return T0 - timedelta(minutes=minutes)


def envelope(event_type: str, payload: ev.Payload, lead_id: uuid.UUID | None, minutes_ago: int) -> Envelope:
    return make_event(event_type, payload, producer="test", occurred_at=at(minutes_ago), lead_id=lead_id)


def paid(
    lead_id: uuid.UUID, invoice_id: uuid.UUID, amount: str, *, full: bool, late: int = 0, minutes_ago: int
) -> Envelope:
    payload = ev.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        invoice_id=invoice_id,
        amount=Decimal(amount),
        currency="EUR",
        method="card",
        paid_at=at(minutes_ago),
        days_late=late,
        invoice_paid=full,
    )
    return envelope("payment.succeeded", payload, lead_id, minutes_ago)


def captured(lead_id: uuid.UUID, minutes_ago: int, referred_by: uuid.UUID | None = None) -> Envelope:
    payload = ev.LeadCaptured(
        name="Ada", email=f"{lead_id.hex[:8]}@example.com", channel="website", fit_score=70, referred_by=referred_by
    )
    return envelope("lead.captured", payload, lead_id, minutes_ago)


def cleared(lead_id: uuid.UUID, minutes_ago: int) -> Envelope:
    payload = ev.DepositCleared(
        deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(300), currency="EUR", cleared_at=at(minutes_ago)
    )
    return envelope("deposit.cleared", payload, lead_id, minutes_ago)


def won(lead_id: uuid.UUID, minutes_ago: int) -> Envelope:
    payload = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Retainer",
        kind="retainer",
        currency="EUR",
        total=Decimal(1000),
        signed_by="Ada",
        signed_at=at(minutes_ago),
        deposit_share=Decimal("0.3"),
        hourly_rate=Decimal(90),
    )
    return envelope("deal.won", payload, lead_id, minutes_ago)


def opened(lead_id: uuid.UUID, minutes_ago: int) -> Envelope:
    return envelope("email.opened", ev.EmailOpened(message_id=uuid.uuid4()), lead_id, minutes_ago)


def feedback(lead_id: uuid.UUID, minutes_ago: int, *, complaint: bool) -> Envelope:
    payload = ev.FeedbackReceived(survey="nps", score=3 if complaint else 9, complaint=complaint)
    return envelope("feedback.received", payload, lead_id, minutes_ago)


def story() -> tuple[list[Envelope], list[Envelope]]:
    """A first batch (clients that exist before), then one that touches them and new ones."""
    referrer, prospect, new, referred, leaver, stranger = (uuid.uuid4() for _ in range(6))
    inv1, inv2, inv3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sub = uuid.uuid4()
    before = [
        captured(referrer, 600),
        cleared(referrer, 590),
        opened(referrer, 580),
        paid(referrer, uuid.uuid4(), "100", full=True, minutes_ago=570),
        captured(prospect, 560),
    ]
    invoiced = ev.InvoiceIssued(
        invoice_id=inv1,
        number="1",
        kind="deposit",
        amount=Decimal(500),
        currency="EUR",
        issued_at=at(90),
        due_at=at(10),
    )
    batch = [
        before[2],  # redelivered: applied already
        captured(new, 100),
        won(new, 99),
        envelope("invoice.issued", invoiced, new, 98),
        paid(new, inv1, "200", full=False, minutes_ago=97),
        paid(new, inv1, "300", full=True, late=3, minutes_ago=96),
        cleared(new, 95),
        opened(new, 94),
        feedback(new, 93, complaint=True),
        envelope(
            "payment.failed",
            ev.PaymentFailed(invoice_id=inv2, amount=Decimal(50), currency="EUR", method="card"),
            new,
            92,
        ),
        envelope(
            "invoice.overdue",
            ev.InvoiceOverdue(invoice_id=inv2, amount_due=Decimal(50), currency="EUR", due_at=at(200), days_overdue=4),
            new,
            91,
        ),
        paid(new, inv2, "50", full=True, minutes_ago=90),
        envelope(
            "credit_note.issued",
            ev.CreditNoteIssued(
                credit_note_id=uuid.uuid4(),
                number="CN-1",
                invoice_id=inv1,
                amount=Decimal(100),
                currency="EUR",
                reduces_due=Decimal(0),
                refunded=Decimal(100),
                credited=Decimal(0),
                reason="goodwill",
                issued_at=at(89),
            ),
            new,
            89,
        ),
        envelope(
            "invoice.voided", ev.InvoiceVoided(invoice_id=inv3, number="3", reason="typo", voided_at=at(88)), new, 88
        ),
        paid(referrer, uuid.uuid4(), "80", full=True, late=12, minutes_ago=87),
        feedback(referrer, 86, complaint=True),
        envelope("email.clicked", ev.EmailClicked(message_id=uuid.uuid4(), url="https://x.example"), referrer, 85),
        captured(referred, 84, referred_by=referrer),
        cleared(referred, 83),
        won(prospect, 82),
        cleared(prospect, 81),
        opened(prospect, 80),
        envelope(
            "subscription.started",
            ev.SubscriptionStarted(
                subscription_id=sub,
                deal_id=uuid.uuid4(),
                monthly_fee=Decimal(800),
                currency="EUR",
                started_at=at(79),
            ),
            leaver,
            79,
        ),
        envelope(
            "subscription.cancelled",
            ev.SubscriptionCancelled(
                subscription_id=sub,
                reason="non_payment",
                effective_at=at(78),
            ),
            leaver,
            78,
        ),
        envelope(
            "subscription.cancelled",
            ev.SubscriptionCancelled(
                subscription_id=uuid.uuid4(),
                reason="non_payment",
                effective_at=at(77),
                monthly_fee=Decimal(400),
                currency="EUR",
            ),
            stranger,
            77,
        ),
    ]
    batch.insert(5, batch[4])  # the same event twice in one batch
    return before, batch


# Generated ids that differ from run to run, whatever the order the events were applied in.
RANDOM_IDS = {"client_events": {"id"}, "health_history": {"id"}, "mrr_movements": {"id"}, "referrals": {"id"}}


async def state(engine: AsyncEngine) -> dict[str, Any]:
    return await database_state(engine, Base.metadata, drop=RANDOM_IDS)


@pytest.fixture
def two_databases(database_factory) -> tuple[str, str]:
    """Two fresh databases (PostgreSQL ones with TEST_DATABASE_URL), made outside the test's loop."""
    return database_factory("first"), database_factory("second")


async def test_a_batch_ends_where_its_events_applied_one_by_one_end(two_databases, tmp_path) -> None:
    before, batch = story()
    results = []
    for url, together in zip(two_databases, (True, False), strict=True):
        consumer, engine, _ = await consumer_on(url, tmp_path)
        await consumer.handle(records(before))
        if together:
            await consumer.handle(records(batch))
        else:
            for one in records(batch):
                await consumer.handle([one])
        results.append(await state(engine))
        await engine.dispose()
    together_state, alone_state = results
    assert together_state["clients"] and together_state["loyalty_awards"] and together_state["cancellations"]
    assert any(e[0] == "loyalty.points_awarded" for e in together_state["outbox"])  # the referral converted
    for table in alone_state:
        assert together_state[table] == alone_state[table], table


async def test_a_failed_batch_applied_one_by_one_ends_the_same(two_databases, tmp_path) -> None:
    """A poison event fails the batch after its prefetch; the retry, event by event, starts
    from nothing the failed transaction read."""
    before, batch = story()
    poison = envelope("email.opened", ev.EmailOpened(message_id=uuid.uuid4()), None, 50)
    results = []
    for url, events in zip(two_databases, ([*batch[:10], poison, *batch[10:]], batch), strict=True):
        consumer, engine, dead = await consumer_on(url, tmp_path)
        await consumer.handle(records(before))
        await consumer.handle(records(events))
        results.append((await state(engine), dead.sent))
        await engine.dispose()
    (poisoned, dead_letters), (clean, _) = results
    assert [reason for _, reason, _ in dead_letters] == ["rejected"]
    assert poisoned == clean

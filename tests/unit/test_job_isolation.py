"""Poison isolation in scheduled jobs (issue 15): nurture's time zones are total, and one record
that fails a job is kept aside with its reason while the rest of the pass goes on."""

from __future__ import annotations

import uuid
from datetime import UTC as STDLIB_UTC  # this module's own UTC is the ZoneInfo one
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from services.nurture import domain as nurture_domain
from services.nurture import sending as nurture_sending
from services.nurture.store import Contact, ScheduledMessage
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import JobFailureRow, PlumbingBase, create_engine
from shared.jobs import Backoff, Jobs, RecordJob, describe, infrastructure
from shared.metrics import PlumbingMetrics
from shared.uow import UnitOfWorkFactory
from tests.unit.test_nurture_batching import T0, captured, happened, make  # noqa: F401 - make is a fixture

UTC = ZoneInfo("UTC")
REPO = Path(__file__).resolve().parents[2]
ODD_ZONES = [
    "America",  # a directory of the tz database: IsADirectoryError
    "Etc",
    "x" * 100_000,  # OSError 36, file name too long
    "a\x00b",
    "../../etc/passwd",
    "/etc/localtime",
    "Europe/Paris/",
    "__init__.py",  # a file of the tzdata package that is no zone
    "\ud800",
    " ",
    "Mars/Olympus_Mons",
]


# --------------------------------------------------------------------------- finding 1: zone()


@pytest.mark.parametrize("name", ODD_ZONES, ids=lambda n: repr(n[:20]))
def test_any_odd_time_zone_key_reads_as_utc_and_is_reported(name: str) -> None:
    assert nurture_domain.zone(name) == UTC
    assert not nurture_domain.known_zone(name)


def test_real_time_zones_are_kept() -> None:
    assert nurture_domain.zone("Asia/Tehran") == ZoneInfo("Asia/Tehran")
    assert nurture_domain.zone(None) == UTC and nurture_domain.known_zone(None)
    assert nurture_domain.known_zone("America/New_York")


def test_quiet_hours_of_an_odd_zone_are_those_of_utc() -> None:
    quiet = nurture_domain.QuietHours(21, 8)
    night = datetime(2030, 1, 7, 23, 0, tzinfo=STDLIB_UTC)
    assert nurture_domain.quiet_until(night, timezone_name="America", quiet=quiet) == datetime(
        2030, 1, 8, 8, 0, tzinfo=STDLIB_UTC
    )


async def _capture(nurture: Any, people: dict[str, str]) -> dict[str, uuid.UUID]:
    """Capture one lead per name, then give each its time zone as a contact row written before
    events were validated keeps it (events now refuse an odd zone; rows already stored do not:
    SQLite even keeps all 100,000 characters). Returns their ids."""
    ids = {name: uuid.uuid4() for name in people}
    await nurture.consume([happened("lead.captured", captured(n), ids[name]) for n, name in enumerate(people)])
    async with nurture.uow() as tx:
        for name, tz in people.items():
            (await tx.session.get(Contact, ids[name])).timezone = tz  # type: ignore[union-attr]
    return ids


async def _steps(nurture: Any, step: int) -> dict[uuid.UUID, ScheduledMessage]:
    async with nurture.uow.sessions() as session:
        rows = await session.scalars(
            select(ScheduledMessage).where(ScheduledMessage.sequence == "welcome", ScheduledMessage.step == step)
        )
        return {r.lead_id: r for r in rows}


async def test_one_leads_time_zone_no_longer_stops_everyones_email(make) -> None:  # noqa: F811
    """Issue 15, finding 1: a lead captured with "America" (or a 100,000-character zone) made
    every send pass fail once its first delayed step fell due, so nobody's e-mail went."""
    nurture = await make(quiet_hours_start=21, quiet_hours_end=8, marketing_cap_per_week=10)
    people = {f"good{n}": "Europe/Paris" for n in range(5)} | {"dir": "America", "long": "x" * 100_000}
    ids = await _capture(nurture, people)
    sender = nurture.app.state.sender
    await sender.tick(T0)  # the welcomes are immediate: quiet hours never held them
    assert len(nurture.transport.sent) == len(people)

    later = T0 + timedelta(days=3, hours=1)  # the follow-up (delay 3d) is due, at 13:00 UTC
    nurture.clock.advance_to(later)
    await sender.tick(later)
    follow_ups = await _steps(nurture, 1)
    assert {name: follow_ups[ids[name]].status for name in people} == dict.fromkeys(people, "sent")
    assert len(nurture.transport.sent) == 2 * len(people)


async def test_a_directory_of_the_tz_database_is_sent_too(make) -> None:  # noqa: F811
    nurture = await make(quiet_hours_start=21, quiet_hours_end=8, marketing_cap_per_week=10)
    await _capture(nurture, {"good": "UTC", "odd": "Etc"})
    later = T0 + timedelta(days=3, hours=1)
    nurture.clock.advance_to(later)
    await nurture.app.state.sender.tick(later)
    assert {r.status for r in (await _steps(nurture, 1)).values()} == {"sent"}


# --------------------------------------------------------------------------- the sender isolates a poison step


async def test_a_step_that_breaks_rendering_is_held_with_its_reason_and_the_batch_goes_on(make, monkeypatch) -> None:  # noqa: F811
    """Any error writing one e-mail (not only a template error) failed the sender's whole batch:
    the others stayed claimed, unsent, until the claims lapsed, and then failed again."""
    nurture = await make()
    ids = await _capture(nurture, {f"p{n}": "UTC" for n in range(4)})
    poison = ids["p2"]
    render = nurture.app.state.sender.renderer.render

    def breaks_on_poison(template: str, language: str, context: dict[str, Any]) -> Any:
        if context["name"] == "Person 2":
            raise RecursionError("maximum recursion depth exceeded")
        return render(template, language, context)

    monkeypatch.setattr(nurture.app.state.sender.renderer, "render", breaks_on_poison)
    sender = nurture.app.state.sender
    await sender.tick(T0)
    first = await _steps(nurture, 0)
    assert {lead: row.status for lead, row in first.items() if lead != poison} == dict.fromkeys(
        [i for i in ids.values() if i != poison], "sent"
    )
    held = first[poison]
    assert held.status == "pending" and held.claimed_until == T0 + timedelta(minutes=5)  # the backoff
    assert "RecursionError" in (held.last_error or "")
    async with nurture.uow.sessions() as session:
        failure = await session.get(JobFailureRow, ("nurture.sender", str(held.id)))
    assert failure is not None and failure.attempts == 1 and not failure.given_up
    assert "RecursionError" in failure.reason
    assert nurture.metric("clientflow_job_failures_total", service="nurture", job="nurture.sender") == 1

    # Its backoff over, it is tried again; fixed, it goes, and its failure is forgotten.
    monkeypatch.setattr(nurture.app.state.sender.renderer, "render", render)
    nurture.clock.advance_to(T0 + timedelta(minutes=6))
    await sender.tick(nurture.clock.now())
    assert (await _steps(nurture, 0))[poison].status == "sent"
    async with nurture.uow.sessions() as session:
        assert await session.get(JobFailureRow, ("nurture.sender", str(held.id))) is None


async def test_a_step_that_always_fails_is_given_up_after_the_last_attempt(make, monkeypatch) -> None:  # noqa: F811
    nurture = await make()
    ids = await _capture(nurture, {"ok": "UTC", "bad": "UTC"})
    render = nurture.app.state.sender.renderer.render

    def breaks(template: str, language: str, context: dict[str, Any]) -> Any:
        if context["name"] == "Person 1":
            raise ValueError("odd")
        return render(template, language, context)

    monkeypatch.setattr(nurture.app.state.sender.renderer, "render", breaks)
    sender = nurture.app.state.sender
    now = T0
    for _ in range(Backoff().max_attempts):
        await sender.tick(now)
        now += timedelta(hours=7)  # past any backoff
        nurture.clock.advance_to(now)
    bad = (await _steps(nurture, 0))[ids["bad"]]
    assert bad.status == "failed" and bad.reason == "job_failed" and "ValueError: odd" in (bad.last_error or "")
    assert nurture.metric("clientflow_job_records_given_up", service="nurture", job="nurture.sender") == 1
    assert nurture.metric("clientflow_job_failures_total", service="nurture", job="nurture.sender") == 5
    assert (await _steps(nurture, 0))[ids["ok"]].status == "sent"


async def test_a_step_whose_plan_fails_is_held_and_the_others_are_claimed(make, monkeypatch) -> None:  # noqa: F811
    nurture = await make()
    ids = await _capture(nurture, {f"p{n}": "UTC" for n in range(3)})
    plan = nurture_domain.plan_send
    poison = ids["p1"]
    poison_steps = {r.id for r in (await _steps(nurture, 0)).values() if r.lead_id == poison}

    def odd(**kwargs: Any) -> nurture_domain.Plan:
        if kwargs["timezone_name"] == "boom":
            raise KeyError("boom")
        return plan(**kwargs)

    async with nurture.uow() as tx:
        (await tx.session.get(Contact, poison)).timezone = "boom"  # type: ignore[union-attr]
    monkeypatch.setattr(nurture_domain, "plan_send", odd)
    await nurture.app.state.sender.tick(T0)
    first = await _steps(nurture, 0)
    assert {lead: r.status for lead, r in first.items()} == {
        i: ("pending" if i == poison else "sent") for i in ids.values()
    }
    assert first[poison].claimed_until == T0 + timedelta(minutes=5)
    async with nurture.uow.sessions() as session:
        keys = set(await session.scalars(select(JobFailureRow.key).where(JobFailureRow.job == "nurture.sender")))
    assert keys == {str(i) for i in poison_steps}


async def test_a_claim_that_fails_in_the_database_is_split_and_the_others_go(make, monkeypatch) -> None:  # noqa: F811
    """A failure outside the pure rules (say deferring a step past the year 9999) fails the
    claim's transaction: the steps are then claimed one by one, and only the culprit is held."""
    nurture = await make(quiet_hours_start=21, quiet_hours_end=8, marketing_cap_per_week=10)
    ids = await _capture(nurture, {f"p{n}": "UTC" for n in range(3)})
    await nurture.app.state.sender.tick(T0)
    defer = nurture_sending._defer
    poison = ids["p0"]

    async def overflowing(tx: Any, row: ScheduledMessage, until: datetime) -> None:
        if row.lead_id == poison:
            raise OverflowError("date value out of range")
        await defer(tx, row, until)

    monkeypatch.setattr(nurture_sending, "_defer", overflowing)
    night = T0 + timedelta(days=3, hours=10)  # 22:00 UTC: every follow-up is deferred to 08:00
    nurture.clock.advance_to(night)
    await nurture.app.state.sender.tick(night)
    follow_ups = await _steps(nurture, 1)
    morning = datetime(2030, 1, 11, 8, 0, tzinfo=STDLIB_UTC)
    assert {lead: r.due_at for lead, r in follow_ups.items() if lead != poison} == {
        i: morning for i in ids.values() if i != poison
    }
    assert follow_ups[poison].claimed_until == night + timedelta(minutes=5)
    assert "OverflowError" in (follow_ups[poison].last_error or "")


# --------------------------------------------------------------------------- RecordJob itself


@pytest.fixture
async def uow(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
    yield UnitOfWorkFactory(engine, producer="test", clock=SimulatedClock(T0))
    await engine.dispose()


class Ledger:
    """A step that writes a row per record (the state row) and fails on the keys it is told."""

    def __init__(self) -> None:
        self.poison: set[int] = set()
        self.calls: list[int] = []

    async def step(self, tx: Any, key: int) -> str:
        from shared.db import StateRow

        self.calls.append(key)
        tx.session.add(StateRow(name=f"done:{key}", value="1"))
        await tx.session.flush()
        if key in self.poison:
            raise ValueError(f"odd record {key}")
        return f"ok {key}"


async def _done(uow: UnitOfWorkFactory) -> set[str]:
    from shared.db import StateRow

    async with uow.sessions() as session:
        return {n.removeprefix("done:") for n in await session.scalars(select(StateRow.name))}


def _metrics() -> PlumbingMetrics:
    return PlumbingMetrics("test", CollectorRegistry())


def _sample(metrics: PlumbingMetrics, name: str, job: str) -> float:
    return metrics.registry.get_sample_value(name, {"service": "test", "job": job}) or 0.0


async def test_a_chunk_is_one_transaction_and_a_failing_one_is_split(uow: UnitOfWorkFactory) -> None:
    metrics = _metrics()
    job = Jobs(metrics)("test.ledger")
    assert _sample(metrics, "clientflow_job_failures_total", "test.ledger") == 0  # exposed from the start
    ledger = Ledger()
    ledger.poison = {7}
    result = await job.run(uow, range(10), ledger.step, now=T0, chunk=5)
    assert sorted(result.done) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert list(result.failed) == [7] and result.failed[7].reason == "ValueError: odd record 7"
    assert await _done(uow) == {str(k) for k in result.done}  # the failed record's effects rolled back
    # The first chunk once; the second together until it failed, then each of it alone.
    assert ledger.calls == [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8, 9]
    assert _sample(metrics, "clientflow_job_failures_total", "test.ledger") == 1


async def test_a_failed_record_waits_its_backoff_then_goes_alone_and_is_forgotten(uow: UnitOfWorkFactory) -> None:
    job = RecordJob("test.ledger", backoff=Backoff(max_attempts=3, base=timedelta(minutes=5)))
    ledger = Ledger()
    ledger.poison = {1}
    await job.run(uow, [0, 1, 2], ledger.step, now=T0)
    ledger.calls.clear()
    waiting = await job.run(uow, [1, 3], ledger.step, now=T0 + timedelta(minutes=4))
    assert waiting.waiting == [1] and ledger.calls == [3]
    second = await job.run(uow, [1], ledger.step, now=T0 + timedelta(minutes=5))
    assert second.failed[1].attempts == 2 and second.failed[1].next_attempt_at == T0 + timedelta(minutes=15)
    ledger.poison.clear()
    third = await job.run(uow, [1], ledger.step, now=T0 + timedelta(minutes=15))
    assert third.done == {1: "ok 1"}
    async with uow.sessions() as session:
        assert list(await session.scalars(select(JobFailureRow))) == []


async def test_a_record_is_given_up_after_the_last_attempt(uow: UnitOfWorkFactory) -> None:
    metrics = _metrics()
    job = RecordJob("test.ledger", metrics=metrics, backoff=Backoff(max_attempts=2, base=timedelta(minutes=1)))
    ledger = Ledger()
    ledger.poison = {0}
    await job.run(uow, [0], ledger.step, now=T0)
    last = await job.run(uow, [0], ledger.step, now=T0 + timedelta(minutes=1))
    assert last.failed[0].given_up
    assert _sample(metrics, "clientflow_job_records_given_up", "test.ledger") == 1
    later = await job.run(uow, [0], ledger.step, now=T0 + timedelta(days=30))
    assert later.waiting == [0] and later.done == {}
    # Another process (a restart) reads the count back from the table.
    again = RecordJob("test.ledger", metrics=_metrics())
    async with uow.sessions() as session:
        known = await again.failures(session)
    assert known["0"].given_up and _sample(again.metrics, "clientflow_job_records_given_up", "test.ledger") == 1  # type: ignore[arg-type]


async def test_an_infrastructure_error_ends_the_pass_and_blames_no_record(uow: UnitOfWorkFactory) -> None:
    job = RecordJob("test.ledger")

    async def database_away(tx: Any, key: int) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    with pytest.raises(OperationalError):
        await job.run(uow, [0, 1], database_away, now=T0)
    async with uow.sessions() as session:
        assert list(await session.scalars(select(JobFailureRow))) == []
    assert infrastructure(ConnectionRefusedError()) and not infrastructure(IsADirectoryError())


async def test_alone_mode_runs_each_record_once_in_its_own_transaction(uow: UnitOfWorkFactory) -> None:
    job = RecordJob("test.ledger")
    ledger = Ledger()
    ledger.poison = {1}
    result = await job.run(uow, [0, 1, 2], ledger.step, now=T0, together=False)
    assert ledger.calls == [0, 1, 2] and sorted(result.done) == [0, 2]


async def test_load_reads_the_records_and_a_key_it_leaves_out_is_skipped(uow: UnitOfWorkFactory) -> None:
    job = RecordJob("test.ledger")
    loads: list[list[int]] = []

    async def load(tx: Any, keys: list[int]) -> dict[int, str]:
        loads.append(keys)
        return {k: f"record {k}" for k in keys if k != 2}

    async def step(tx: Any, record: str) -> str:
        return record.upper()

    result = await job.run(uow, [1, 2, 3], step, now=T0, load=load)
    assert result.done == {1: "RECORD 1", 3: "RECORD 3"} and loads == [[1, 2, 3]]


def test_a_reason_is_bounded_and_storable() -> None:
    reason = describe(ValueError("\ud800\x00" + "x" * 10_000))
    assert len(reason) == 2000 and "\x00" not in reason
    reason.encode("utf-8")


# --------------------------------------------------------------------------- retention's price changes


async def test_a_price_change_that_fails_is_kept_aside_and_the_review_goes_on(tmp_path: Path, monkeypatch) -> None:
    """The review applied every due price change and loyalty award in one transaction, then
    every page of clients: one failing price change stopped all of it."""
    from services.retention import schedule
    from services.retention import subscriptions as retention
    from services.retention.app import MIGRATIONS
    from services.retention.app import create_app as retention_app
    from services.retention.context import Context
    from services.retention.metrics import RetentionMetrics
    from services.retention.settings import Settings
    from services.retention.store import Client, Subscription
    from shared.events import make_event
    from shared.migrations import upgrade_async
    from tests.unit.test_outbox_inbox import FakeDeadLetters, record

    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    clock = SimulatedClock(T0)
    app = retention_app(
        Settings(database_url=url, data_dir=tmp_path, migrate_on_start=False), engine=engine, clock=clock
    )
    consumer = app.state.runtime._consumer
    consumer.dead_letters = FakeDeadLetters()
    leads = {name: uuid.uuid4() for name in ("a", "odd", "b")}
    subs = {name: uuid.uuid4() for name in leads}
    events = []
    for name, lead_id in leads.items():

        def about(event_type: str, payload: Any, lead_id: uuid.UUID = lead_id) -> Any:
            return make_event(event_type, payload, producer="billing", occurred_at=T0, lead_id=lead_id)

        events += [
            about(
                "deposit.cleared",
                ev.DepositCleared(
                    deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal(300), currency="EUR", cleared_at=T0
                ),
            ),
            about(
                "subscription.started",
                ev.SubscriptionStarted(
                    subscription_id=subs[name],
                    deal_id=uuid.uuid4(),
                    monthly_fee=Decimal(1000),
                    currency="EUR",
                    included_hours=Decimal(10),
                    started_at=T0,
                ),
            ),
            about(
                "price.change_scheduled",
                ev.PriceChangeScheduled(
                    subscription_id=subs[name],
                    old_price=Decimal(1000),
                    new_price=Decimal(1100),
                    currency="EUR",
                    effective_at=T0 + timedelta(days=1),
                ),
            ),
        ]
    await consumer.handle([record(e, i, topic=ev.topic_of(e.type)) for i, e in enumerate(events)])
    summarise = retention._summarise

    async def odd(tx: Any, client: Any) -> None:
        if client.lead_id == leads["odd"]:
            raise ArithmeticError("an odd fee")
        await summarise(tx, client)

    monkeypatch.setattr(retention, "_summarise", odd)
    metrics = PlumbingMetrics("retention", CollectorRegistry())
    ctx = Context(
        settings=app.state.runtime.settings,
        metrics=RetentionMetrics(CollectorRegistry(), app.state.runtime.uow.sessions),
        jobs=Jobs(metrics),
    )
    later = T0 + timedelta(days=2)
    clock.advance_to(later)
    await schedule.review_health(app.state.runtime.uow, ctx, later)
    async with app.state.runtime.uow.sessions() as session:
        fees = {s.lead_id: (s.monthly_fee, s.pending_fee) for s in await session.scalars(select(Subscription))}
        assessed = {c.lead_id: c.health_assessed_at for c in await session.scalars(select(Client))}
        failure = await session.get(JobFailureRow, ("retention.price_changes", str(subs["odd"])))
    assert fees == {
        leads["a"]: (Decimal(1100), None),
        leads["odd"]: (Decimal(1000), Decimal(1100)),
        leads["b"]: (Decimal(1100), None),
    }
    assert set(assessed.values()) == {later}  # the odd client's health too: only its price change failed
    assert failure is not None and failure.reason == "ArithmeticError: an odd fee" and failure.attempts == 1
    assert (
        metrics.registry.get_sample_value(
            "clientflow_job_failures_total", {"service": "retention", "job": "retention.price_changes"}
        )
        == 1
    )
    await engine.dispose()


# --------------------------------------------------------------------------- the migrations make the model's table


@pytest.mark.parametrize("service", ["leads", "nurture", "billing", "retention"])
async def test_each_services_migrations_make_job_failures_as_the_model_says(tmp_path: Path, service: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import MetaData

    from shared.migrations import upgrade_async

    url = f"sqlite+aiosqlite:///{tmp_path / service}.db"
    await upgrade_async(REPO / "services" / service / "migrations", url)
    engine = create_engine(url)
    wanted = MetaData(naming_convention=PlumbingBase.metadata.naming_convention)
    JobFailureRow.__table__.to_metadata(wanted)

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [d for d in compare_metadata(context, wanted) if "job_failures" in repr(d)]

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    await engine.dispose()

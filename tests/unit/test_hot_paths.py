"""Hot paths the benchmark found (bench/): each fix keeps its behaviour and its saving."""

from __future__ import annotations

from datetime import UTC

import pytest

from services.leads import domain


def test_a_stored_icp_is_parsed_once_and_shared(monkeypatch) -> None:
    calls: list[str] = []
    original = domain.IdealClientProfile.from_yaml.__func__

    def counting(cls, text: str) -> domain.IdealClientProfile:
        calls.append(text)
        return original(cls, text)

    monkeypatch.setattr(domain.IdealClientProfile, "from_yaml", classmethod(counting))
    domain.parsed_icp.cache_clear()
    document = domain.DEFAULT_ICP_YAML + "\n# version 2\n"
    first, again = domain.parsed_icp(document), domain.parsed_icp(document)
    assert first is again and first == domain.DEFAULT_ICP
    assert len(calls) == 1
    # A new version is parsed (and validated) on its own.
    changed = document.replace("weight: 15", "weight: 16")
    assert domain.parsed_icp(changed) != first and len(calls) == 2


async def test_a_batch_checks_its_inbox_in_one_query_not_one_per_event(tmp_path) -> None:
    import uuid
    from datetime import datetime

    from prometheus_client import CollectorRegistry
    from sqlalchemy import event, func, select

    from shared import events as ev
    from shared.clock import Clock
    from shared.consumer import BatchConsumer
    from shared.db import InboxRow, PlumbingBase, create_engine
    from shared.metrics import PlumbingMetrics
    from shared.uow import UnitOfWorkFactory
    from tests.unit.test_outbox_inbox import FakeDeadLetters, record

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
    inbox_reads: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "inbox" in statement:
            inbox_reads.append(statement)

    applied: list[str] = []

    async def on_lost(_tx, _event, payload: ev.DealLost) -> None:
        applied.append(payload.reason)

    consumer = BatchConsumer(
        service="billing",
        uow=UnitOfWorkFactory(engine, producer="billing", clock=Clock()),
        handlers={"deal.lost": on_lost},
        dead_letters=FakeDeadLetters(),
        metrics=PlumbingMetrics("billing", CollectorRegistry()),
    )
    now = datetime.now(UTC)
    events = [
        ev.make_event("deal.lost", ev.DealLost(deal_id=uuid.uuid4(), reason=f"r{i}"), producer="leads", occurred_at=now)
        for i in range(200)
    ]
    await consumer.handle([record(e, i) for i, e in enumerate(events[:50])])
    inbox_reads.clear()
    # 150 new events, 50 redelivered and one repeated inside the batch: one inbox read in all.
    batch = [*events, events[60]]
    await consumer.handle([record(e, 100 + i) for i, e in enumerate(batch)])
    assert len(inbox_reads) == 1
    assert applied == [f"r{i}" for i in range(200)]
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(InboxRow)) == 200
    await engine.dispose()


async def test_nurture_reads_its_sequences_once_per_transaction_and_sees_its_own_put(tmp_path) -> None:
    from sqlalchemy import event

    from services.nurture import catalog as nurture
    from services.nurture.content import load_catalog
    from services.nurture.settings import Settings
    from services.nurture.store import Base
    from shared.clock import Clock
    from shared.db import create_engine
    from shared.uow import UnitOfWorkFactory

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nurture.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    reads: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_args) -> None:
        if "FROM nurture_sequences" in statement or "sequence_definitions" in statement:
            reads.append(statement)

    builtin = load_catalog(Settings().sequences_dir)
    uow = UnitOfWorkFactory(engine, producer="nurture", clock=Clock())
    async with uow() as tx:
        first = await nurture.current_catalog(tx, builtin)
        for _ in range(20):
            assert await nurture.current_catalog(tx, builtin) is first
        assert len(reads) == 1
        welcome = builtin.sequences["welcome"]
        definition = {
            "name": "welcome",
            "trigger": "lead.captured",
            "category": "marketing",
            "steps": [{"template": welcome.steps[0].template, "delay": 0}],
        }
        await nurture.put_sequence(tx, builtin, name="welcome", definition=definition, missing_templates=lambda _: [])
        changed = await nurture.current_catalog(tx, builtin)
        assert changed is not first and len(changed.sequences["welcome"].steps) == 1
    async with uow() as tx:  # a new transaction reads the table again
        assert len((await nurture.current_catalog(tx, builtin)).sequences["welcome"].steps) == 1
    await engine.dispose()


def test_templates_are_listed_once_per_few_seconds_not_per_email(tmp_path, monkeypatch) -> None:
    from services.nurture import content

    for part, text in (("subject", "Hi"), ("txt", "Hello {{ name }}"), ("html", "<p>Hello {{ name }}</p>")):
        (tmp_path / f"hello.en.{part}.j2").write_text(text)
    renderer = content.Renderer(tmp_path)
    listings: list[int] = []
    original = renderer.env.list_templates
    monkeypatch.setattr(renderer.env, "list_templates", lambda: listings.append(1) or original())
    for _ in range(50):
        assert renderer.render("hello", "de", {"name": "Ada"}).text == "Hello Ada"
    assert len(listings) == 1
    # A template added now is seen at once by validation, and by rendering after the TTL.
    for part in ("subject", "txt", "html"):
        (tmp_path / f"bye.en.{part}.j2").write_text("Bye")
    assert renderer.missing({"bye", "hello"}) == []
    monkeypatch.setattr(content, "TEMPLATE_LIST_TTL_S", 0.0)
    assert renderer.render("bye", "en", {}).subject == "Bye"


def test_the_consumer_fetch_wait_is_a_setting_the_embedded_run_shortens(monkeypatch) -> None:
    from services.leads.app import create_app
    from services.leads.settings import Settings

    assert Settings().consumer_fetch_max_wait_ms == 500  # Kafka's own default for real brokers
    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", "20")
    settings = Settings()
    assert settings.consumer_fetch_max_wait_ms == 20
    runtime = create_app(settings).state.runtime
    batch = [s for s in runtime.broker.subscribers if type(s).__name__ == "BatchSubscriber"]
    assert [s._connection_args["fetch_max_wait_ms"] for s in batch] == [20]


async def test_billing_gauges_read_open_invoices_as_columns_with_the_same_figures(tmp_path) -> None:
    import uuid
    from datetime import datetime, timedelta
    from decimal import Decimal

    from prometheus_client import CollectorRegistry
    from sqlalchemy import event

    from services.billing import invoices, reports
    from services.billing.context import Billing
    from services.billing.metrics import BillingMetrics
    from services.billing.settings import Settings
    from services.billing.store import Base, Invoice
    from shared import events as ev
    from shared.clock import SimulatedClock
    from shared.db import PlumbingBase, create_engine
    from shared.uow import UnitOfWorkFactory

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
        await conn.run_sync(Base.metadata.create_all)
    clock = SimulatedClock(datetime(2026, 6, 1, tzinfo=UTC))
    uow = UnitOfWorkFactory(engine, producer="billing", clock=clock)
    ctx = Billing(settings=Settings(), metrics=BillingMetrics(CollectorRegistry()))
    for amount, days in (("100", 7), ("250", 7), ("40", 7)):
        async with uow() as tx:
            await invoices.issue_invoice(
                tx,
                lead_id=uuid.uuid4(),
                kind="deposit",
                currency="EUR",
                lines=[ev.InvoiceLine(description="Deposit", amount=Decimal(amount))],
                due_in_days=days,
            )
    clock.advance_to(clock.now() + timedelta(days=10))  # all three are overdue now
    loaded: list[object] = []

    @event.listens_for(Invoice, "load")
    def _loaded(target, _context) -> None:
        loaded.append(target)

    async with uow() as tx:
        figures = await reports.summary(tx, ctx)
    event.remove(Invoice, "load", _loaded)
    assert figures["receivables"] == {"EUR": Decimal("390.00")}
    assert figures["invoices_overdue"] == 3
    assert loaded == []  # no Invoice object materialised for a gauge
    await engine.dispose()


def test_on_the_embedded_broker_only_the_e_mail_hop_polls_fast(tmp_path) -> None:
    """Each held fetch costs Tansu CPU: the hop a new lead waits on (nurture) polls every 20 ms,
    the bookkeeping hops every 100 ms; a wait set by hand applies to every service."""
    from clientflow.cluster import SERVICE_NAMES, Launcher

    launcher = Launcher(tmp_path, env={})
    launcher.tansu_fetch_waits()
    waits = {s: launcher.child_env(launcher.add(s))["KAFKA_FETCH_MAX_WAIT_MS"] for s in SERVICE_NAMES}
    assert waits == {"leads": "100", "nurture": "20", "billing": "100", "retention": "100"}
    own = Launcher(tmp_path, env={"KAFKA_FETCH_MAX_WAIT_MS": "250"})
    own.tansu_fetch_waits()
    assert {own.child_env(own.add(s))["KAFKA_FETCH_MAX_WAIT_MS"] for s in SERVICE_NAMES} == {"250"}
    one = own.add("leads", env={"KAFKA_FETCH_MAX_WAIT_MS": "5"})
    assert own.child_env(one)["KAFKA_FETCH_MAX_WAIT_MS"] == "5"


def test_event_ids_follow_the_clock_so_inbox_inserts_land_together() -> None:
    import time
    import uuid

    from shared.events import Envelope, new_event_id

    first = [new_event_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_event_id()
    assert {i.version for i in first} == {7} and {i.variant for i in first} == {uuid.RFC_4122}
    assert len(set(first)) == 1000
    assert max(i.hex for i in first) < later.hex  # stored as hex on SQLite, as bytes on PostgreSQL
    assert abs(int(first[0].hex[:12], 16) - time.time() * 1000) < 5000  # the leading 48 bits: Unix ms
    event = Envelope(type="lead.captured", occurred_at="2026-12-07T00:00:00Z", producer="leads")
    assert event.event_id.version == 7


def test_a_service_process_freezes_what_it_loaded_and_collects_young_objects_less_often() -> None:
    import gc

    from shared.serve import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # the modules, classes and schemas loaded so far
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_service_process_keeps_two_malloc_arenas_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform

    from shared.serve import limit_malloc_arenas

    if platform.libc_ver()[0] == "glibc":
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
        assert limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's choice stands

"""Scheduled steps go in as one Core executemany at the session's next flush
(``record.add_steps``) instead of as ORM objects: the rows are the ones the ORM wrote, a query
later in the transaction sees them, and a rolled-back savepoint takes its own with it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from services.nurture import domain, enrollment, record
from services.nurture.content import load_catalog
from services.nurture.store import Base, Enrollment, ScheduledMessage
from shared.clock import SimulatedClock
from shared.db import PlumbingBase, create_engine
from shared.uow import UnitOfWorkFactory

SEQUENCES = Path(__file__).resolve().parents[2] / "services" / "nurture" / "sequences"
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


async def factory(tmp_path: Path, name: str) -> UnitOfWorkFactory:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
        await conn.run_sync(Base.metadata.create_all)
    return UnitOfWorkFactory(engine, producer="nurture", clock=SimulatedClock(T0))


async def raw_steps(uow: UnitOfWorkFactory) -> list[tuple[Any, ...]]:
    async with uow.sessions() as session:
        return [tuple(r) for r in await session.execute(text("SELECT * FROM scheduled_messages ORDER BY id"))]


async def test_the_rows_are_the_ones_the_orm_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = load_catalog(SEQUENCES)
    data = {"invoice_id": str(uuid.uuid4()), "due_at": (T0 + timedelta(days=10)).isoformat()}
    core, orm = await factory(tmp_path, "core"), await factory(tmp_path, "orm")
    written: list[dict[str, Any]] = []
    add_steps = record.add_steps

    def keep(tx: Any, rows: list[dict[str, Any]]) -> None:
        written.extend(dict(r) for r in rows)
        add_steps(tx, rows)

    monkeypatch.setattr(enrollment, "add_steps", keep)
    async with core() as tx:
        for sequence in catalog.sequences.values():
            await enrollment.enroll(tx, sequence=sequence, lead_id=uuid.uuid4(), at=T0, data=data)
    assert {r["variables"] is None for r in written} == {True, False}  # JSON null and a value
    assert any(r["condition"] for r in written) and any(r["immediate"] for r in written) and len(written) > 10
    async with orm() as tx:  # as enroll wrote them before: ORM objects, flushed at the commit
        tx.session.add_all(ScheduledMessage(**r) for r in written)
    assert await raw_steps(core) == await raw_steps(orm)


async def test_a_query_in_the_same_transaction_sees_the_new_steps(tmp_path: Path) -> None:
    uow = await factory(tmp_path, "seen")
    welcome = load_catalog(SEQUENCES).sequences["welcome"]
    lead_id = uuid.uuid4()
    async with uow() as tx:
        ids = await enrollment.enroll(tx, sequence=welcome, lead_id=lead_id, at=T0)
        assert ids and set(await tx.session.scalars(select(ScheduledMessage.id))) == set(ids)
        await enrollment.end_each(tx, await record.active_enrollments(tx, lead_id), reason="reply")
        second = await enrollment.enroll(tx, sequence=welcome, lead_id=uuid.uuid4(), at=T0)
    async with uow.sessions() as session:
        status = dict((await session.execute(select(ScheduledMessage.id, ScheduledMessage.status))).all())
    assert {status[i] for i in ids} == {domain.CANCELLED}
    assert {status[i] for i in second} == {domain.PENDING}


async def test_a_rolled_back_savepoint_takes_its_steps_with_it(tmp_path: Path) -> None:
    uow = await factory(tmp_path, "savepoint")
    welcome = load_catalog(SEQUENCES).sequences["welcome"]
    async with uow() as tx:
        kept = await enrollment.enroll(tx, sequence=welcome, lead_id=uuid.uuid4(), at=T0)
        savepoint = await tx.session.begin_nested()
        dropped = await enrollment.enroll(tx, sequence=welcome, lead_id=uuid.uuid4(), at=T0)
        await savepoint.rollback()
        later = await enrollment.enroll(tx, sequence=welcome, lead_id=uuid.uuid4(), at=T0)
    async with uow.sessions() as session:
        steps = set(await session.scalars(select(ScheduledMessage.id)))
        assert len(list(await session.scalars(select(Enrollment)))) == 2
    assert steps == set(kept) | set(later) and not set(dropped) & steps


def test_the_queue_gauge_says_unknown_until_a_sender_pass_has_counted() -> None:
    import math

    from prometheus_client import CollectorRegistry

    from services.nurture.metrics import NurtureMetrics

    registry = CollectorRegistry()
    metrics = NurtureMetrics(registry)
    assert math.isnan(registry.get_sample_value("clientflow_nurture_queue_depth") or 0.0)
    metrics.queue_depth.set(3)
    assert registry.get_sample_value("clientflow_nurture_queue_depth") == 3

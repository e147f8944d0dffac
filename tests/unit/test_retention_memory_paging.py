"""Retention's long passes hold a page of rows, not the whole table, and still see every row:
the due loyalty awards are settled a window at a time (ties on ``due_at`` included), and the
economics read their rows a page at a time, in the order the query gives."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from services.retention import economics, loyalty, record
from services.retention.app import MIGRATIONS
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import Client, LoyaltyAward
from shared.clock import SimulatedClock
from shared.db import create_engine
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
async def uow(tmp_path) -> AsyncIterator[UnitOfWorkFactory]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    yield UnitOfWorkFactory(engine, producer="retention", clock=SimulatedClock(T0))
    await engine.dispose()


def context(uow: UnitOfWorkFactory, tmp_path) -> Context:
    settings = Settings(database_url="sqlite+aiosqlite:///unused.db", data_dir=tmp_path)
    return Context(settings=settings, metrics=RetentionMetrics(CollectorRegistry(), uow.sessions))


async def test_due_awards_are_settled_across_windows(uow, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(loyalty, "WINDOW", 3)
    ctx = context(uow, tmp_path)
    lead_id = uuid.uuid4()
    # Eight due awards, several on the same instant (a window may end inside a tie), one not due.
    due_at = [T0 - timedelta(days=d) for d in (5, 5, 5, 4, 3, 3, 2, 1)]
    async with uow() as tx:
        await record.client(tx, lead_id)
        await tx.session.flush()
        for at in [*due_at, T0 + timedelta(days=1)]:
            tx.session.add(
                LoyaltyAward(
                    invoice_id=uuid.uuid4(),
                    lead_id=lead_id,
                    amount=Decimal("100.00"),
                    currency="EUR",
                    due_at=at,
                    status="pending",
                    points=0,
                )
            )

    settled = await loyalty.award_due_points(uow, ctx, T0)

    assert settled == len(due_at)
    async with uow() as tx:
        statuses = list(await tx.session.scalars(select(LoyaltyAward.status).order_by(LoyaltyAward.due_at)))
        client = await tx.session.get(Client, lead_id)
    assert statuses == ["awarded"] * len(due_at) + ["pending"]
    assert client is not None
    points = 8 * loyalty.domain.loyalty_points(Decimal("100.00"), ctx.settings.loyalty.points_per_unit)
    assert client.loyalty_points == points
    assert await loyalty.award_due_points(uow, ctx, T0) == 0


async def test_economics_rows_are_the_buffered_rows_in_order(uow, monkeypatch) -> None:
    monkeypatch.setattr(economics, "_PAGE", 3)
    async with uow() as tx:
        for _ in range(10):
            await record.client(tx, uuid.uuid4())
    query = select(Client.lead_id, Client.created_at).order_by(Client.lead_id)
    async with uow() as tx:
        buffered = (await tx.session.execute(query)).all()
        streamed = [row async for row in economics._rows(tx.session, query)]
    assert streamed == buffered
    assert len(streamed) == 10


async def make_clients(uow: UnitOfWorkFactory, clients: int, prospects: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(clients + prospects)]
    async with uow() as tx:
        for n, lead_id in enumerate(ids):
            client = await record.client(tx, lead_id)
            if n < clients:
                client.became_client_at = T0 - timedelta(days=30 + n)
                client.first_subscribed_at = T0 - timedelta(days=30 + n)
    return sorted(ids[:clients])


async def test_client_id_windows_give_every_client_once_in_key_order(uow, monkeypatch) -> None:
    monkeypatch.setattr(record, "ID_WINDOW", 3)
    expected = await make_clients(uow, clients=7, prospects=4)
    windows = [window async for window in record.client_id_windows(uow)]
    assert [len(w) for w in windows] == [3, 3, 1]
    assert [i for w in windows for i in w] == expected


async def test_scheduled_reviews_reach_every_client_across_windows(uow, tmp_path, monkeypatch) -> None:
    from services.retention import schedule, tiers

    monkeypatch.setattr(record, "ID_WINDOW", 2)
    ctx = context(uow, tmp_path)
    ids = await make_clients(uow, clients=5, prospects=2)
    await schedule.review_health(uow, ctx, T0)
    async with uow() as tx:
        assessed = list(await tx.session.scalars(select(Client.health_assessed_at).where(Client.lead_id.in_(ids))))
    assert assessed == [T0] * 5
    review = await tiers.review_tiers(uow, ctx, T0, force=True)
    assert review is not None
    assert sum(review.result["tiers"].values()) == 5
    assert list(review.result["tiers"]) == list(tiers.domain.TIERS)
    # One window as big as the whole table gives the same summary.
    monkeypatch.setattr(record, "ID_WINDOW", 1000)
    again = await tiers.review_tiers(uow, ctx, T0, force=True)
    assert again is not None
    assert again.result["tiers"] == review.result["tiers"]

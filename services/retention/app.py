"""Composition root of the retention service: the one place things are wired."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.retention import api, handlers, subscribers
from services.retention.handlers import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from services.retention.store import Client
from shared import topics
from shared.clock import Clock
from shared.jobs import Jobs
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork

MIGRATIONS = Path(__file__).parent / "migrations"


async def refresh_economics_gauges(runtime: ServiceRuntime, ctx: Context, now: datetime) -> None:
    """The economics of the trailing 30 days as gauges: all channels, then each channel."""
    start = now - timedelta(days=30)

    async def read(tx: UnitOfWork) -> None:
        # On the read pool: a long computation that must not hold the loop (gauges are thread-safe).
        channels = [c for c in await tx.session.scalars(select(Client.channel).distinct()) if c]
        for channel in [None, *sorted(channels)]:
            figures = await handlers.economics(tx, ctx, start=start, end=now, channel=channel, currency=None)
            ctx.metrics.publish_economics(figures, channel=channel or "all")

    await runtime.reads.run(read)


def create_app(
    settings: Settings | None = None,
    *,
    broker: KafkaBroker | None = None,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(
        settings,
        migrations_dir=MIGRATIONS,
        publishes_to=(topics.RETENTION, topics.CANCELLATIONS),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    ctx = Context(
        settings=settings, metrics=RetentionMetrics(runtime.registry, runtime.uow.sessions), jobs=Jobs(runtime.metrics)
    )
    subscribers.register(runtime, ctx)

    async def review(now: datetime) -> None:
        # One job, in order: two passes that lock client rows (SKIP LOCKED) running side by
        # side would skip each other's rows.
        await handlers.review_health(runtime.uow, ctx, now)
        # Polled often, acts once per period (monthly by default) on the business clock.
        await handlers.review_tiers(runtime.uow, ctx, now)
        await refresh_economics_gauges(runtime, ctx, now)

    runtime.every("retention.review", review, settings.review_interval_s)
    return runtime.http_app(
        title="Clientflow retention",
        description="Client health, tiers, cancellations and save offers, and unit economics.",
        routers=[api.router(runtime, ctx)],
    )

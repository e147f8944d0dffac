"""Composition root of the retention service: the one place things are wired."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.retention import (
    api,
    economics,
    manual_tier,
    notes_api,
    rates_api,
    schedule,
    subscribers,
    termination,
    termination_api,
    tiers,
)
from services.retention.context import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from shared import topics
from shared.clock import Clock
from shared.jobs import Jobs
from shared.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: Settings | None = None,
    *,
    broker: KafkaBroker | None = None,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The retention service: its consumer, its scheduled review and its HTTP routes; a test
    hands in its own broker, engine or clock."""
    settings = settings or Settings()
    runtime = ServiceRuntime(
        settings,
        migrations_dir=MIGRATIONS,
        publishes_to=(topics.RETENTION, topics.CANCELLATIONS, topics.EXPORTS),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    metrics = RetentionMetrics(runtime.registry, runtime.uow.sessions)
    # Counters count what committed, whichever path (HTTP, consumer, scheduled job) emitted it.
    runtime.uow.count_emitted(metrics.count_emitted)
    runtime.scrape_refreshers.append(metrics.before_scrape)
    ctx = Context(settings=settings, metrics=metrics, jobs=Jobs(runtime.metrics))
    subscribers.register(runtime, ctx)

    async def review(now: datetime) -> None:
        # One job, in order: two passes that lock client rows (SKIP LOCKED) running side by
        # side would skip each other's rows.
        await schedule.review_health(runtime.uow, ctx, now)
        await termination.end_due(runtime.uow, ctx, now)
        # A manual tier whose day has come ends (the computed tier is in force again).
        await manual_tier.expire_due(runtime.uow, ctx, now)
        # Polled often, acts once per period (monthly by default) on the business clock.
        await tiers.review_tiers(runtime.uow, ctx, now)
        await economics.publish_trailing(runtime.reads, ctx, now)

    runtime.every("retention.review", review, settings.review_interval_s)
    return runtime.http_app(
        title="Clientflow retention",
        description="Client health, tiers, cancellations and save offers, and unit economics.",
        routers=[
            api.router(runtime, ctx),
            termination_api.router(runtime, ctx),
            rates_api.router(runtime, ctx),
            notes_api.router(runtime, ctx),
        ],
    )

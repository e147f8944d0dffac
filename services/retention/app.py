"""Composition root of the retention service: the one place things are wired."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.retention import api, handlers, subscribers
from services.retention.handlers import Context
from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from shared import topics
from shared.clock import Clock
from shared.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


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
    ctx = Context(settings=settings, metrics=RetentionMetrics(runtime.registry, runtime.uow.sessions))
    subscribers.register(runtime, ctx)

    async def review(now: datetime) -> None:
        await handlers.review_health(runtime.uow, ctx, now)

    runtime.every("retention.health_review", review, settings.review_interval_s)
    return runtime.http_app(
        title="Clientflow retention",
        description="Client health, tiers, cancellations and save offers, and unit economics.",
        routers=[api.router(runtime, ctx)],
    )

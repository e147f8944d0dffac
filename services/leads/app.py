"""Composition root of the leads service: the one place things are wired."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.leads import api, subscribers
from services.leads.settings import Settings
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
        publishes_to=(topics.LEADS, topics.DEALS),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    subscribers.register(runtime)
    return runtime.http_app(
        title="Clientflow leads",
        description="Acquisition and sales: leads, ICP fit, red flags, qualification, deals and estimates.",
        routers=[api.router(runtime, settings)],
    )

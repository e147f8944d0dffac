"""Composition root of the billing service: the one place things are wired."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import api, subscribers
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings
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
        publishes_to=(topics.PAYMENTS,),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    metrics = BillingMetrics(runtime.registry)
    subscribers.register(runtime, settings, metrics)
    return runtime.http_app(
        title="Clientflow billing",
        description="Invoices, deposits before work, payments, credit balances and subscriptions.",
        routers=[api.router(runtime, settings, metrics)],
    )

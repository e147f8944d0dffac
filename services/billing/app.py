"""Composition root of the billing service: the one place things are wired."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import (
    api,
    dunning,
    reports,
    stripe_api,
    subscribers,
    subscriptions,
    terminations,
    write_off_api,
)
from services.billing.context import Billing
from services.billing.gateway import CardGateway, NoGateway
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings
from shared import topics
from shared.clock import Clock
from shared.jobs import Jobs
from shared.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    broker: KafkaBroker | None = None,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
    gateway: CardGateway | None = None,
) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(
        settings,
        migrations_dir=MIGRATIONS,
        publishes_to=(topics.PAYMENTS, topics.EXPORTS),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    ctx = Billing(
        settings=settings,
        metrics=BillingMetrics(runtime.registry),
        gateway=gateway or NoGateway(),
        jobs=Jobs(runtime.metrics),
    )
    # Every counter of an event is counted here, once its transaction committed, whichever
    # path (HTTP, consumer, scheduled job) emitted it.
    runtime.uow.count_emitted(ctx.metrics.count)
    subscribers.register(runtime, ctx)

    async def cycle(_now: datetime) -> None:
        """Relationships whose notice ran out (first: no period after their end is billed),
        retainer periods due, then dunning (one record failing stops neither: shared.jobs)."""
        await terminations.end_due(runtime.uow, ctx, runtime.clock.now())
        await subscriptions.bill_due_subscriptions(runtime.uow, ctx, runtime.clock.now())
        await dunning.run(runtime.uow, ctx, runtime.clock.now())

    async def report(_now: datetime) -> None:
        async with runtime.uow() as tx:
            await reports.refresh_gauges(tx, ctx)

    runtime.every("billing.cycle", cycle, settings.cycle_interval_s)
    runtime.every("billing.report", report, settings.report_interval_s)
    app = runtime.http_app(
        title="Clientflow billing",
        description=(
            "Invoices, deposits before work, milestones, retainers with hours and overage, change orders, "
            "payments and signed webhooks, credit notes, dunning, pauses, price changes and write-offs."
        ),
        routers=[api.router(runtime, ctx), stripe_api.router(runtime, ctx), write_off_api.router(runtime, ctx)],
    )
    app.state.billing = ctx
    return app

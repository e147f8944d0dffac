"""Composition root of the leads service: the one place things are wired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.leads import (
    accounts_api,
    api,
    data_retention,
    deposits,
    estimates_api,
    exports,
    exports_api,
    people_api,
    returning,
    sales,
    sales_api,
    speed,
    subscribers,
    team,
)
from services.leads.context import Context
from services.leads.domain.assignment import OWNER_ROLES
from services.leads.metrics import LeadsMetrics
from services.leads.rows import LeadsSession
from services.leads.settings import Settings
from shared import topics
from shared.clock import Clock
from shared.db import AccessPerson
from shared.jobs import Jobs
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork

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
        publishes_to=(topics.LEADS, topics.DEALS, topics.TASKS, topics.PEOPLE, topics.EXPORTS),
        broker=broker,
        engine=engine,
        clock=clock,
        people_owner=True,
    )
    # Timeline, stage history, touches and red flags: one INSERT per table and flush (rows.py).
    runtime.uow.sessions.configure(sync_session_class=LeadsSession)
    ctx = Context(
        settings=settings,
        metrics=LeadsMetrics(runtime.registry, runtime.uow.sessions, runtime.reads),
        jobs=Jobs(runtime.metrics),
    )
    runtime.uow.count_emitted(ctx.metrics.count)

    async def team_gauges(now: datetime) -> None:
        # Each rep's month so far, for the per-rep panels (off the loop, on the read pool).
        start = datetime(now.year, now.month, 1, tzinfo=UTC)

        async def read(tx: UnitOfWork) -> list[team.RepFigures]:
            return (await team.performance(tx, ctx, since=start, until=now + timedelta(seconds=1))).reps

        ctx.metrics.team(await runtime.reads.run(read, key="team-gauges"))

    runtime.every("leads-team-gauges", team_gauges, 60.0)

    async def speed_to_lead(now: datetime) -> None:
        # Untouched leads past their deadline go to an admin; tenders are reminded of.
        await speed.escalate_overdue(runtime.uow, ctx, now)
        await speed.remind_tenders(runtime.uow, ctx, now)
        # A deposit left unpaid too long: refuses_deposit on the lead and a task for its owner.
        await deposits.flag_unpaid(runtime.uow, ctx, now)

    runtime.every("leads-speed-to-lead", speed_to_lead, 60.0)

    async def person_changed(tx: UnitOfWork, person: AccessPerson) -> None:
        # A disabled rep (or one no longer in sales or success) gives their open leads back.
        if not person.active or person.role not in OWNER_ROLES:
            await sales.release_owned_by(tx, ctx, person.id)
        sales.forget_team(tx)

    async def refresh_gauges(_now: object) -> None:
        await ctx.metrics.refresh()

    # Stage gauges come from the database: at start, when scraped, after commits that move
    # stages (once a second at most) and now and then.
    runtime.every("leads-gauges", refresh_gauges, 60.0)

    async def returning_clients(_now: object) -> None:
        await returning.refresh(runtime.uow)

    # The clients the agency let go, in memory for captures (services/leads/returning.py).
    runtime.every("leads-returning", returning_clients, returning.REFRESH_S)

    async def erase_expired(now: datetime) -> None:
        # Retention of data: the disqualified and the lost, erased once kept long enough.
        await data_retention.erase_expired(runtime.uow, ctx, now, metrics=runtime.metrics, audit=runtime.audit)

    data_retention.expose(runtime.metrics)
    runtime.every("leads-data-retention", erase_expired, 3600.0)
    runtime.scrape_refreshers.append(ctx.metrics.refresh)

    async def purge_exports(now: datetime) -> None:
        # Exports kept past LEADS_EXPORT_RETENTION_DAYS go (on the business clock).
        await exports.purge_expired(runtime.uow, now)

    runtime.every("leads-exports-purge", purge_exports, 3600.0)
    subscribers.register(runtime, ctx)
    return runtime.http_app(
        title="Clientflow leads",
        description=(
            "Acquisition and sales: leads and CSV import, dedupe, ICP fit, red flags, BANT qualification, "
            "engagement, funnel, deals and estimates, change requests, channel spend, erasure; the people registry "
            "(people, roles, tokens)."
        ),
        routers=[
            api.router(runtime, ctx),
            accounts_api.router(runtime, ctx),
            estimates_api.router(runtime, ctx),
            sales_api.router(runtime, ctx),
            people_api.router(runtime, runtime.authenticator, on_changed=person_changed),
            exports_api.router(runtime, ctx),
        ],
    )

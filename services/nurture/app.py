"""Composition root of the nurture service: the one place things are wired."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from services.nurture import api, consent, consent_api, subscribers, takeover, takeover_api, tasks, tasks_api
from services.nurture.content import Renderer, load_catalog
from services.nurture.metrics import NurtureMetrics
from services.nurture.sender import Sender
from services.nurture.settings import Settings
from services.nurture.transport import Transport, make_transport
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
    transport: Transport | None = None,
) -> FastAPI:
    """The nurture service, wired: broker, engine, clock and transport may be handed in (tests);
    nothing connects until the app starts."""
    settings = settings or Settings()
    # Bad sequences or missing templates stop the service here, not at the first send.
    catalog = load_catalog(settings.sequences_dir)
    renderer = Renderer(settings.templates_dir, fallback=settings.default_language)
    renderer.check(catalog.templates())
    renderer.check({consent.TEMPLATE})  # the consent confirmation, sent outside any sequence
    runtime = ServiceRuntime(
        settings,
        migrations_dir=MIGRATIONS,
        publishes_to=(topics.ENGAGEMENT, topics.EXPORTS),
        broker=broker,
        engine=engine,
        clock=clock,
    )
    metrics = NurtureMetrics(runtime.registry)
    # What a committed event says is counted from it, whichever path emitted it.
    runtime.uow.count_emitted(metrics.count_event)
    transport = transport or make_transport(settings)
    jobs = Jobs(runtime.metrics)
    sender = Sender(
        settings=settings,
        uow=runtime.uow,
        clock=runtime.clock,
        renderer=renderer,
        transport=transport,
        metrics=metrics,
        jobs=jobs,
        builtin=catalog,
    )
    job = runtime.every("nurture-sender", sender.tick, interval_s=settings.send_interval_s)
    # A released takeover (and any commit that emitted) may have freed steps to send.
    runtime.uow.after_commit.append(job.wake)
    # An erased person's mail goes from the mail store too (a file transport keeps copies).
    forget_mail = getattr(transport, "forget", None)
    subscribers.register(
        runtime,
        catalog=catalog,
        metrics=metrics,
        task_policy=settings.tasks,
        wake_sender=job.wake,
        forget_mail=forget_mail,
        consent_wording=settings.consent_wording_version,
        confirm_url=lambda request_id: consent_api.confirm_link(settings, request_id),
        # An export carries the e-mails as they went out, from the mail store when it keeps them.
        read_mail=getattr(transport, "read", None),
        mail_from=settings.mail_from,
    )

    async def refresh_task_gauges(now: datetime | None = None) -> None:
        async with runtime.uow() as tx:
            metrics.show_tasks(await tasks.open_and_overdue(tx, now=now or runtime.clock.now()))

    # Open and overdue tasks come from the database: when scraped, and now and then (a task
    # becomes overdue by the clock moving, with nothing committed).
    runtime.every("nurture-task-gauges", refresh_task_gauges, interval_s=60.0)
    runtime.scrape_refreshers.append(refresh_task_gauges)

    async def review_takeovers(now: datetime) -> None:
        await takeover.review_takeovers(runtime.uow, jobs=jobs, now=now, task_policy=settings.tasks, metrics=metrics)

    # A reply's takeover ends by itself and owners are reminded: on the business clock, so a
    # clock jump runs it at once (what ends commits ``takeover.ended``, which wakes the sender).
    runtime.every("nurture-takeovers", review_takeovers, interval_s=settings.takeover.takeover_interval_s)

    app = runtime.http_app(
        title="Clientflow nurture",
        description="Sequences, enrollments, messages, consent, tracking, feedback, tasks and human takeovers.",
        routers=[
            api.router(runtime, settings, builtin=catalog, renderer=renderer, metrics=metrics),
            tasks_api.router(runtime),
            takeover_api.router(runtime, builtin=catalog),
            consent_api.router(runtime, settings, builtin=catalog, metrics=metrics),
        ],
    )
    app.state.sender = sender
    app.state.sender_job = job
    return app

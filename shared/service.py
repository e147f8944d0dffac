"""The runtime one service process is built on: engine, broker, clock, unit of work, outbox
relay, batch subscribers, scheduled jobs and the HTTP app's lifespan. Each service's
``create_app`` builds one, registers its subscribers and routes, and returns the app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from fastapi import FastAPI
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware.trustedhost import TrustedHostMiddleware
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from shared import data_retention, topics
from shared.access import fold
from shared.access.audit import AuditLog
from shared.access.authn import Authenticator, Lockout
from shared.access.oidc import OidcConfig, OidcVerifier
from shared.access.routes import access_router
from shared.broker import ensure_topics, make_broker
from shared.clock import Clock, make_clock
from shared.consumer import BatchConsumer, DeadLetters, Handler, Prefetch
from shared.crypto import KeyRing
from shared.db import IdempotencyKeyRow, StateRow, create_engine
from shared.docs import topic_schema
from shared.events import ClockAdvanced, Envelope, topic_of
from shared.http import IDEMPOTENCY_TTL, install_plumbing
from shared.key_fold import KeyFold
from shared.metrics import PlumbingMetrics
from shared.migrations import upgrade_async
from shared.reads import ReadPool
from shared.relay import OutboxRelay
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Job = Callable[[datetime], Awaitable[None]]


class ScheduledJob:
    """A job run every ``interval_s``, when the business clock jumps, and when woken."""

    def __init__(self, name: str, job: Job, interval_s: float) -> None:
        self.name = name
        self.job = job
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next pass now instead of at the next interval."""
        self._wake.set()


_CLOCK_STATE = "clock.now"


def _destroying_keys(erasure: Handler) -> Handler:
    """``lead.erased`` as the service handles it, then the person's keys destroyed (here, and
    announced on the keys topic for every other copy)."""

    async def erased(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        await erasure(tx, event, payload)
        if event.lead_id is not None:
            await tx.destroy_keys([event.lead_id])

    return erased


class ServiceRuntime:
    """Everything a service process runs, wired once; nothing connects until ``start``."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        migrations_dir: Path,
        publishes_to: tuple[str, ...],
        broker: KafkaBroker | None = None,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        people_owner: bool = False,
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.migrations_dir = migrations_dir
        self.registry = registry or CollectorRegistry()
        self.metrics = PlumbingMetrics(self.name, self.registry)
        self.engine = engine or create_engine(settings.database_url)
        self.clock = clock or make_clock(settings.clock)
        self.broker = broker or make_broker(settings, self.registry)
        self.uow = UnitOfWorkFactory(self.engine, producer=self.name, clock=self.clock)
        # Crypto-shredding: every service seals the personal fields it emits with the person's
        # key, folds the keys topic and may make a person's key, so it publishes there too.
        self.keyring = KeyRing(settings.master_key_ring(), wait_s=settings.key_wait_s)
        self.uow.keyring = self.keyring
        self.key_fold = KeyFold(
            settings.kafka_bootstrap_servers,
            self.uow,
            self.keyring,
            fetch_max_wait_ms=min(settings.consumer_fetch_max_wait_ms, 100),
        )
        publishes_to = tuple(dict.fromkeys((*publishes_to, topics.KEYS)))
        self.publishers = {
            topic: self.broker.publisher(
                topic,
                title=f"{self.name}:{topic}",
                description=f"Events {self.name} publishes on `{topic}` (see the envelope's `type`)",
                schema=topic_schema(topic),
            )
            for topic in publishes_to
        }
        self.relay = OutboxRelay(
            self.engine,
            self._publish,
            metrics=self.metrics,
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_interval_s,
            publish_timeout_s=settings.relay_publish_timeout_s,
            retention=timedelta(hours=settings.outbox_retention_hours),
        )
        self.uow.after_commit.append(self.relay.wake)
        self.dead_letters = DeadLetters(self.broker, service=self.name, metrics=self.metrics)
        # Access: the owner of the people registry (leads) writes the access tables itself;
        # every other service folds them from the people topic.
        self.people_owner = people_owner
        oidc = None
        if settings.oidc_issuer:
            oidc = OidcVerifier(
                OidcConfig(
                    issuer=settings.oidc_issuer,
                    jwks_url=settings.oidc_jwks_url,
                    audience=settings.oidc_audience,
                    role_claim=settings.oidc_role_claim,
                    algorithms=tuple(settings.oidc_algorithms),
                )
            )
        self.authenticator = Authenticator(
            sessions=self.uow.sessions,
            bootstrap_key=settings.api_key.get_secret_value(),
            oidc=oidc,
            cache_ttl_s=settings.token_cache_s,
        )
        self.lockout = Lockout(
            failures=settings.auth_lockout_failures,
            window_s=settings.auth_lockout_window_s,
            lock_s=settings.auth_lockout_s,
        )
        self.audit = AuditLog(self.uow.sessions)
        self.reads = ReadPool(settings.database_url, producer=self.name, clock=self.clock, fallback=self.uow)
        self._jobs: list[ScheduledJob] = []
        self.every("idempotency-key-purge", self._purge_idempotency_keys, 900.0)
        self.every("person-key-rewrap", self._rewrap_keys, 3600.0)
        # Retention of data: audit rows past CLIENTFLOW_AUDIT_RETENTION_DAYS (shared/data_retention.py).
        self.every("data-retention-purge", self._purge_expired_audit, 3600.0)
        self._consumer: BatchConsumer | None = None
        # Gauges read from the database when Prometheus scrapes; the relay's first (it may be
        # stuck on a frozen broker, so its own loop would not refresh the backlog).
        self.scrape_refreshers: list[Callable[[], Awaitable[None]]] = [self.relay.refresh_gauges]
        self._tasks: list[asyncio.Task[None]] = []
        # Only a clock made from the settings follows the clock topic; a clock handed in (tests)
        # is moved by whoever handed it in.
        self._follows_topic = clock is None and self.clock.simulated
        if self._follows_topic:
            self._subscribe_clock()

    # ------------------------------------------------------------------ wiring

    def consume(self, handlers: dict[str, Handler], *, prefetch: Prefetch | None = None) -> BatchConsumer:
        """Subscribe to the topics of the handled event types, as one member of the service's
        group (one member, not one per topic, so a start is one rebalance, not several), in
        batches, with offsets committed only after the batch's transaction (NACK on error
        rewinds, so nothing is skipped)."""
        if self._consumer is not None:
            raise RuntimeError("consume() is called once, with every handler of the service")
        if not self.people_owner:
            handlers = {**fold.handlers(self.authenticator), **handlers}
        # The service's own erasure also runs for an event whose person's key is gone here.
        own_erasure = handlers.get("lead.erased")
        if own_erasure is not None:
            handlers = {**handlers, "lead.erased": _destroying_keys(own_erasure)}
        consumer = BatchConsumer(
            service=self.name,
            uow=self.uow,
            handlers=handlers,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            max_attempts=self.settings.max_attempts,
            prefetch=prefetch,
            keyring=self.keyring,
            on_shredded=own_erasure,
            key_fold=self.key_fold,
        )
        subscribed = sorted({topic_of(event_type) for event_type in handlers})

        @self.broker.subscriber(
            *subscribed,
            group_id=self.settings.group_id,
            batch=True,
            max_records=self.settings.consumer_max_records,
            batch_timeout_ms=self.settings.consumer_batch_timeout_ms,
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=self.settings.consumer_heartbeat_interval_ms,
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            max_partition_fetch_bytes=self.settings.consumer_max_partition_fetch_bytes,
            fetch_max_bytes=16 * self.settings.consumer_max_partition_fetch_bytes,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=f"{self.name}:{','.join(subscribed)}",
            description=f"{self.name} applies {', '.join(sorted(handlers))}",
        )
        async def on_batch(message: KafkaMessage) -> None:
            records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
            await consumer.handle(records)
            self._observe_lag(message.consumer, records)

        self._consumer = consumer
        return consumer

    def _observe_lag(self, kafka_consumer: Any, records: tuple[Any, ...]) -> None:
        """Lag per partition: the high watermark of the last fetch minus what this batch reached."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        for (topic, partition), offset in last.items():
            try:
                highwater = kafka_consumer.highwater(TopicPartition(topic, partition))
            except Exception:  # no fetch metadata for it yet (just assigned)
                continue
            if highwater is not None:
                self.metrics.consumer_lag.labels(self.name, topic, str(partition)).set(max(0, highwater - offset - 1))

    async def _before_scrape(self) -> None:
        for refresh in self.scrape_refreshers:
            await refresh()

    def every(self, name: str, job: Job, interval_s: float) -> ScheduledJob:
        """Run ``job(now)`` every ``interval_s`` seconds, whenever the business clock jumps and
        whenever the returned handle's ``wake()`` is called."""
        scheduled = ScheduledJob(name, job, interval_s)
        self._jobs.append(scheduled)
        return scheduled

    async def _watch_loop(self, period_s: float = 0.1) -> None:
        """Event-loop lag: how late a timer fires. Everything on the loop (requests, batches,
        jobs) shares it, so this is what a health check waits on."""
        loop = asyncio.get_running_loop()
        lag = self.metrics.loop_lag.labels(self.name)
        while True:
            started = loop.time()
            await asyncio.sleep(period_s)
            lag.observe(max(0.0, loop.time() - started - period_s))

    async def _purge_idempotency_keys(self, now: datetime) -> None:
        """Forget Idempotency-Keys older than their TTL (a repeat after that runs for real)."""
        async with self.uow.sessions() as session, session.begin():
            await session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < now - IDEMPOTENCY_TTL))

    async def _purge_expired_audit(self, _now: datetime) -> None:
        """Delete the audit rows older than their retention (aged on the real clock that stamps
        them, as token expiry is: see ``shared.data_retention``)."""
        await data_retention.purge_audit(
            self.uow.sessions, retention_days=self.settings.audit_retention_days, metrics=self.metrics
        )

    async def _rewrap_keys(self, _now: datetime) -> None:
        """After a master key rotation: wrap every live person key again with the new one."""
        while True:
            async with self.uow() as tx:
                done = await self.keyring.rewrap(tx)
            if done:
                log.info("wrapped %d person keys again with master key %s", done, self.keyring.master.current_id)
            else:
                return

    def _subscribe_clock(self) -> None:
        # No group: every instance reads the whole (one-partition) clock topic and keeps the max.
        @self.broker.subscriber(
            topics.CLOCK,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            title=f"{self.name}:clock",
            description="The simulated business clock (CLIENTFLOW_CLOCK=simulated)",
        )
        async def on_clock(message: KafkaMessage) -> None:
            try:
                event = Envelope.model_validate_json(message.body)
                if event.type != "clock.advanced":
                    return
                moment = ClockAdvanced.model_validate(event.data).now
            except ValueError as exc:
                log.warning("ignoring bad clock message: %s", exc)
                return
            if self.clock.advance_to(moment):
                await self._save_clock(moment)

    async def _save_clock(self, moment: datetime) -> None:
        async with self.uow() as tx:
            row = await tx.session.get(StateRow, _CLOCK_STATE)
            if row is None:
                tx.session.add(StateRow(name=_CLOCK_STATE, value=moment.isoformat()))
            else:
                row.value = max(datetime.fromisoformat(row.value), moment).isoformat()

    async def _load_clock(self) -> None:
        async with self.uow.sessions() as session:
            value = await session.scalar(select(StateRow.value).where(StateRow.name == _CLOCK_STATE))
        if value:
            self.clock.advance_to(datetime.fromisoformat(value))

    # ------------------------------------------------------------------ running

    async def _publish(self, topic: str, key: bytes | None, payload: bytes, headers: dict[str, str]) -> None:
        publisher = self.publishers.get(topic)
        if publisher is None:
            raise RuntimeError(f"{self.name} does not publish to {topic}")
        await publisher.publish(payload, key=key, headers=headers)

    async def ready(self) -> dict[str, bool]:
        database = True
        try:
            async with self.engine.connect() as connection:
                await asyncio.wait_for(connection.execute(text("SELECT 1")), 2.0)
        except Exception:
            database = False
        broker = await self.broker.ping(timeout=2.0)
        return {"database": database, "broker": broker}

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await upgrade_async(self.migrations_dir, self.settings.database_url)
        if self._follows_topic:
            await self._load_clock()
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self.settings.broker_connect_timeout_s),
            wait=wait_exponential(multiplier=0.2, max=3),
            reraise=True,
        ):
            with attempt:
                if self.settings.create_topics_on_start:
                    await ensure_topics(
                        self.settings.kafka_bootstrap_servers,
                        partitions=self.settings.topic_partitions,
                        dead_letter_retention_days=self.settings.dead_letter_retention_days,
                    )
                await self.broker.start()
        self.key_fold.start()
        self.relay.start()
        self.audit.start()
        self.reads.start()
        self._tasks.append(asyncio.create_task(self._watch_loop(), name="loop-lag"))
        for job in self._jobs:
            self._tasks.append(asyncio.create_task(self._run_job(job), name=job.name))
        log.info("%s started on broker %s", self.name, self.settings.kafka_bootstrap_servers)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.audit.stop()
        await self.key_fold.stop()
        await asyncio.to_thread(self.reads.stop)
        await self.broker.stop()
        # Publish what was committed meanwhile is the next start's job: the outbox keeps it.
        await self.relay.stop()
        await self.engine.dispose()

    async def _run_job(self, job: ScheduledJob) -> None:
        jumped = self.clock.watch()
        while True:
            jumped.clear()
            job._wake.clear()
            try:
                await job.job(self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduled job %s failed; it runs again at the next tick", job.name)
            waits = [asyncio.ensure_future(jumped.wait()), asyncio.ensure_future(job._wake.wait())]
            try:
                await asyncio.wait(waits, timeout=job.interval_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    def http_app(self, *, title: str, description: str, routers: list[Any]) -> FastAPI:
        """The service's FastAPI app, whose lifespan starts and stops this runtime."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
        for router in [*routers, access_router(self.uow.sessions)]:
            app.include_router(router)
        install_plumbing(
            app,
            metrics=self.metrics,
            ready=self.ready,
            sessions=self.uow.sessions,
            clock=self.clock,
            max_body_bytes=self.settings.max_body_bytes,
            authenticator=self.authenticator,
            lockout=self.lockout,
            audit=self.audit,
            protect_metrics=self.settings.protect_metrics,
            trust_forwarded_for=self.settings.trust_forwarded_for,
            before_scrape=self._before_scrape,
            max_writes_in_flight=self.settings.http_max_writes_in_flight,
        )
        if self.settings.allowed_hosts != ["*"]:
            # Outermost: a request for a Host this service is not reached by gets 400 at once.
            app.add_middleware(TrustedHostMiddleware, allowed_hosts=self.settings.allowed_hosts)
        app.state.runtime = self
        return app

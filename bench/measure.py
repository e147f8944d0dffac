"""The measurements: raw limits, backlog consumption per service, end-to-end latency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, insert, update

from bench import workloads
from bench.cluster import API_KEY, Instance, Launcher, consumed, metrics_text
from shared.broker import ensure_topics
from shared.db import OutboxRow, create_engine

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- raw limits


async def assigned(consumer: AIOKafkaConsumer) -> None:
    """Until the group has given ``consumer`` its partitions."""
    # aiokafka signals no event when an assignment arrives: asking again is the only way.
    while not consumer.assignment():  # noqa: ASYNC110 - no event to wait on (see above)
        await asyncio.sleep(0.05)


async def produce(bootstrap: str, messages: list[workloads.Message]) -> float:
    """Publish with the services' producer settings (acks=all, linger 1 ms); returns seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1, request_timeout_ms=15_000)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def raw_broker(bootstrap: str, *, count: int, size: int) -> dict:
    """aiokafka produce, then consume in a group with a commit per batch (as the services do)."""
    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, partitions=3, names=[topic])
    body = b"x" * size
    messages = [workloads.Message(topic, str(uuid.uuid4()).encode(), body) for _ in range(count)]
    produce_s = await produce(bootstrap, messages)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        seen, started = 0, None
        deadline = time.monotonic() + 120
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            got = sum(len(records) for records in batches.values())
            if got and started is None:
                started = time.perf_counter()  # the group join (a broker-side wait) is not throughput
            seen += got
            if got:
                await consumer.commit()
        consume_s = time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
    if seen < count:
        raise RuntimeError(f"raw consumer read {seen} of {count}")
    return {
        "messages": count,
        "message_bytes": size,
        "produce_per_s": count / produce_s,
        "consume_per_s": count / max(consume_s, 1e-6),
        "round_trip_per_s": count / (produce_s + consume_s),
    }


async def raw_latency(bootstrap: str, *, fetch_max_wait_ms: int, count: int = 60, rate: float = 30) -> dict:
    """One message at a time through the broker (acks=all, then a consumer in a group):
    the floor under every hop of an end-to-end path."""
    topic = f"bench.lat.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, partitions=3, names=[topic])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    try:
        await assigned(consumer)
        await producer.send_and_wait(topic, b"warm-up", key=b"w")
        await consumer.getone()

        async def read() -> None:
            while len(latencies) < count:
                record = await consumer.getone()
                if record.value in sent:
                    latencies.append((time.monotonic() - sent[record.value]) * 1000)

        reader = asyncio.create_task(read())
        for i in range(count):
            value = f"m{i}".encode()
            sent[value] = time.monotonic()
            await producer.send(topic, value, key=str(i).encode())
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(reader, 30)
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "messages": count,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
    }


async def raw_database(url: str, *, count: int, size: int, batch: int = 500) -> dict:
    """Batched inserts of rows like outbox/inbox rows, one transaction per batch."""
    engine = create_engine(url)
    table = Table(
        "bench_raw",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("k", String(36)),
        Column("payload", LargeBinary),
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
            await conn.run_sync(table.metadata.create_all)
        rows = [{"k": str(uuid.uuid4()), "payload": b"x" * size} for _ in range(count)]
        started = time.perf_counter()
        for i in range(0, count, batch):
            async with engine.begin() as conn:
                await conn.execute(insert(table), rows[i : i + batch])
        elapsed = time.perf_counter() - started
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
    finally:
        await engine.dispose()
    return {"rows": count, "row_bytes": size, "batch": batch, "inserts_per_s": count / elapsed}


# --------------------------------------------------------------------------- history for leads


async def seed_leads(url: str, count: int, *, tag: str) -> list[uuid.UUID]:
    """Known leads, captured through leads' own use case (so every index and row is real),
    their outbox marked sent (those events are not what is measured)."""
    from prometheus_client import CollectorRegistry

    from services.leads.capture import capture_lead
    from services.leads.context import Context
    from services.leads.metrics import LeadsMetrics
    from services.leads.schemas import LeadIn
    from services.leads.settings import Settings
    from shared.clock import Clock
    from shared.uow import UnitOfWorkFactory

    engine = create_engine(url)
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    ctx = Context(settings=Settings(database_url=url), metrics=LeadsMetrics(CollectorRegistry(), uow.sessions))
    ids: list[uuid.UUID] = []
    try:
        for start in range(0, count, 250):
            async with uow() as tx:
                for n in range(start, min(count, start + 250)):
                    body = LeadIn(
                        name=f"Known {tag} {n}",
                        email=f"k{n}-{tag}@known{n}-{tag}.example.com",
                        channel="website",
                        consent_marketing=True,
                        budget="5000",
                        currency="EUR",
                    )
                    ids.append((await capture_lead(tx, ctx, body)).lead_id)
        async with engine.begin() as conn:
            await conn.execute(update(OutboxRow).where(OutboxRow.sent_at.is_(None)).values(sent_at=datetime.now(UTC)))
    finally:
        await engine.dispose()
    return ids


# --------------------------------------------------------------------------- backlog


async def backlog(
    cluster: Launcher, service: Instance, messages: list[workloads.Message], *, history: int, progress: Progress
) -> dict:
    """The service's consumption rate over the last ``len(messages) - history`` events.

    The first ``history`` events are published before the service starts and consumed
    unmeasured (they are the history; at least a few, so the consumer group has joined); once
    the service is idle again the measured events are published in one burst (the producer is
    many times faster than any consumer, so they queue up as a backlog at once) and timed
    until the service's counter has seen them all."""
    total = len(messages)
    await produce(cluster.bootstrap, messages[:history])
    await cluster.start([service])
    async with httpx.AsyncClient(timeout=5) as client:
        await _until(client, service, history, progress)
        await quiesce(client, service)
        started = time.monotonic()
        publish_s = await produce(cluster.bootstrap, messages[history:])
        end_t = await _until(client, service, total, progress)
    return {
        "events": total,
        "measured": total - history,
        "events_per_s": (total - history) / (end_t - started),
        "seconds": end_t - started,
        "publish_s": publish_s,
        "peak_rss_mb": service.peak_rss_mb(),
    }


async def _until(
    client: httpx.AsyncClient, service: Instance, count: int, progress: Progress, patience: float = 900
) -> float:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        seen = await consumed(client, service)
        now = time.monotonic()
        progress(seen)
        if seen >= count:
            return now
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{service.name} consumed {seen} of {count} in {patience}s")


async def quiesce(client: httpx.AsyncClient, service: Instance, patience: float = 300) -> None:
    """Wait until the service is idle: its outbox empty and nothing consumed or published for a
    second, so what is measured next does not compete with work left from before."""

    def total(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    deadline = time.monotonic() + patience
    last, still = (-1.0, -1.0), 0
    while time.monotonic() < deadline and still < 4:
        text = await metrics_text(client, service)
        now = (total(text, "clientflow_events_published_total"), total(text, "clientflow_events_consumed_total"))
        still = still + 1 if total(text, "clientflow_outbox_backlog") == 0 and now == last else 0
        last = now
        await asyncio.sleep(0.25)


# --------------------------------------------------------------------------- latency


class Watcher:
    """A plain aiokafka consumer timestamping the first event of each (type, lead) it sees."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=20
        )
        self.seen: dict[tuple[str, str], float] = {}
        self._news = asyncio.Event()  # set whenever ``seen`` grows
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await assigned(self.consumer)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self.consumer:
            now = time.monotonic()
            try:
                event = json.loads(record.value)
            except ValueError:
                continue
            key = (event.get("type"), event.get("lead_id"))
            if key not in self.seen:
                self.seen[key] = now
                self._news.set()

    async def wait_for(self, kind: str, leads: list[str], patience: float) -> None:
        """Until every one of ``leads`` has had a ``kind`` event, ``patience`` seconds at most."""
        deadline = time.monotonic() + patience
        while True:
            self._news.clear()
            left = deadline - time.monotonic()
            if left <= 0 or all((kind, lead) in self.seen for lead in leads):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), left)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[index]


def _lead_body(n: int, tag: str) -> dict:
    return {
        "name": f"Load {tag} {n}",
        "email": f"l{n}-{tag}@co{n}-{tag}.example.com",
        "channel": "website",
        "consent_marketing": True,
        "budget": "8000",
        "currency": "EUR",
        "brief": "SEO for our shop",
    }


async def open_loop(
    *, rate: float, seconds: float, send: Callable[[int, float], Coroutine[Any, Any, None]], progress: Progress
) -> tuple[float, list[asyncio.Task[None]]]:
    """Fire ``send(i)`` at fixed times t0 + i/rate, whatever the answers take (open loop)."""
    t0 = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * seconds)
    for i in range(total):
        planned = t0 + i / rate
        delay = planned - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # Latency counts from the planned time: a late generator does not hide a slow system.
        tasks.append(asyncio.create_task(send(i, planned)))
        if i % 20 == 0:
            progress(i)
    return t0, tasks


def _summary(
    offered: float, seconds: float, t0: float, intended: dict[str, float], done: dict[str, float], failed: int
) -> dict:
    latencies = {lead: done[lead] - intended[lead] for lead in intended if lead in done}
    values = [v * 1000 for v in latencies.values()]
    total = int(offered * seconds)
    half = t0 + seconds / 2
    first = [latencies[k] * 1000 for k in latencies if intended[k] < half]
    second = [latencies[k] * 1000 for k in latencies if intended[k] >= half]
    last = max(done[k] for k in latencies) if latencies else t0 + seconds
    achieved = len(latencies) / max(seconds, last - t0)
    p99_first, p99_second = _percentile(first, 99), _percentile(second, 99)
    growing = not (p99_second <= 1.5 * p99_first + 50) if first and second else True
    return {
        "offered_per_s": offered,
        "seconds": seconds,
        "sent": total,
        "completed": len(latencies),
        "failed_requests": failed,
        "achieved_per_s": achieved,
        "p50_ms": _percentile(values, 50),
        "p95_ms": _percentile(values, 95),
        "p99_ms": _percentile(values, 99),
        "max_ms": max(values) if values else float("nan"),
        "p99_first_half_ms": p99_first,
        "p99_second_half_ms": p99_second,
        "p99_growing": growing,
        "held": achieved >= 0.95 * offered and len(latencies) == total and not growing,
    }


async def lead_step(
    http: httpx.AsyncClient,
    leads: Instance,
    watcher: Watcher,
    *,
    rate: float,
    seconds: float,
    drain_s: float,
    progress: Progress,
) -> dict:
    """POST /leads at a fixed rate; latency from the intended send time to its email.sent."""
    tag = uuid.uuid4().hex[:8]
    intended: dict[str, float] = {}
    failed = 0

    refused: list[float] = []  # seconds from the planned send to a 503 with Retry-After

    async def send(i: int, planned: float) -> None:
        nonlocal failed
        try:
            response = await http.post(
                f"{leads.url}/leads", json=_lead_body(i, tag), headers={"Idempotency-Key": f"bench-{tag}-{i}"}
            )
            if response.status_code == 503 and "retry-after" in response.headers:
                refused.append(time.monotonic() - planned)  # refused fast: the overload's excess
                return
            if response.status_code >= 400:
                failed += 1
                return
            intended[response.json()["lead_id"]] = planned
        except httpx.HTTPError:
            failed += 1

    t0, tasks = await open_loop(rate=rate, seconds=seconds, send=send, progress=progress)
    await asyncio.gather(*tasks)
    await watcher.wait_for("email.sent", list(intended), drain_s)
    done = {lead: watcher.seen[("email.sent", lead)] for lead in intended if ("email.sent", lead) in watcher.seen}
    summary = _summary(rate, seconds, t0, intended, done, failed)
    summary["refused"] = len(refused)
    summary["refused_p99_ms"] = _percentile([r * 1000 for r in refused], 99) if refused else None
    summary["accepted"] = len(intended)
    summary["lost"] = len(intended) - len(done)  # accepted (201) but no e-mail within the drain
    return summary


async def prepare_invoices(
    http: httpx.AsyncClient, leads: Instance, billing: Instance, count: int, progress: Progress
) -> list[dict]:
    """Leads with a won retainer each, and their deposit invoices once billing has issued them."""
    tag = uuid.uuid4().hex[:8]
    semaphore = asyncio.Semaphore(8)
    auth = {"Authorization": f"Bearer {API_KEY}"}

    async def one(i: int) -> dict | None:
        async with semaphore:
            lead = await http.post(
                f"{leads.url}/leads",
                json=_lead_body(i, "pay" + tag),
                headers={**auth, "Idempotency-Key": f"pl-{tag}-{i}"},
            )
            lead_id = lead.json()["lead_id"]
            deal = await http.post(
                f"{leads.url}/leads/{lead_id}/deals",
                headers={**auth, "Idempotency-Key": f"pd-{tag}-{i}"},
                json={
                    "title": "Retainer",
                    "kind": "retainer",
                    "currency": "EUR",
                    "monthly_fee": "1500",
                    "included_hours": "10",
                },
            )
            await http.post(
                f"{leads.url}/deals/{deal.json()['deal_id']}/won",
                json={"signed_by": "Load"},
                headers={**auth, "Idempotency-Key": f"pw-{tag}-{i}"},
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            invoices = (await http.get(f"{billing.url}/invoices", params={"lead_id": lead_id})).json()
            deposit = next((inv for inv in invoices if inv.get("kind") == "deposit"), None)
            if deposit:
                progress(1)
                return {"lead_id": lead_id, "invoice_id": deposit["invoice_id"], "amount": deposit["amount_due"]}
            await asyncio.sleep(0.5)
        return None

    found = await asyncio.gather(*(one(i) for i in range(count)))
    return [f for f in found if f]


async def payment_step(
    http: httpx.AsyncClient,
    billing: Instance,
    watcher: Watcher,
    invoices: list[dict],
    *,
    rate: float,
    drain_s: float,
    progress: Progress,
) -> dict:
    """POST /payments at a fixed rate; latency from the intended time to its deposit.cleared."""
    seconds = len(invoices) / rate
    intended: dict[str, float] = {}
    failed = 0

    async def send(i: int, planned: float) -> None:
        nonlocal failed
        invoice = invoices[i]
        try:
            response = await http.post(
                f"{billing.url}/payments",
                headers={"Idempotency-Key": f"pay-{invoice['invoice_id']}"},
                json={
                    "invoice_id": invoice["invoice_id"],
                    "amount": invoice["amount"],
                    "currency": "EUR",
                    "method": "bank_transfer",
                },
            )
            if response.status_code >= 400:
                failed += 1
                return
            intended[invoice["lead_id"]] = planned
        except httpx.HTTPError:
            failed += 1

    t0, tasks = await open_loop(rate=rate, seconds=seconds, send=send, progress=progress)
    await asyncio.gather(*tasks)
    await watcher.wait_for("deposit.cleared", list(intended), drain_s)
    done = {
        lead: watcher.seen[("deposit.cleared", lead)] for lead in intended if ("deposit.cleared", lead) in watcher.seen
    }
    return _summary(rate, seconds, t0, intended, done, failed)


def message_size(messages: list[workloads.Message]) -> int:
    return int(statistics.mean(len(m.value) for m in messages))


def rng(seed: int) -> random.Random:
    return random.Random(seed)

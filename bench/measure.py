"""The measurements: raw limits, backlog consumption per service, end-to-end latency."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, insert, update

from bench import workloads
from bench.cluster import Instance, Launcher, consumed, metrics_text
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


# --------------------------------------------------------------------------- CPU and profiles


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system, waited-for children included) the processes have used so far,
    from /proc/<pid>/stat; a process gone meanwhile counts as nothing."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


PY_SPY = Path(sys.executable).with_name("py-spy")


async def flame(pid: int, path: Path, *, seconds: float) -> dict:
    """A py-spy flame graph of ``pid`` over ``seconds`` (sampling at 50 Hz without stopping the
    process, so the figures measured meanwhile stay honest); what happened, for the report."""
    if not PY_SPY.exists():
        return {"file": None, "error": f"py-spy not found at {PY_SPY}"}
    process = await asyncio.create_subprocess_exec(
        str(PY_SPY),
        *("record", "--format", "flamegraph", "-o", str(path), "--pid", str(pid)),
        *("--duration", str(max(1, round(seconds))), "--rate", "50", "--nonblocking"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), seconds + 60)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0 or not await asyncio.to_thread(path.exists):
        return {"file": None, "error": err.decode(errors="replace").strip()[-300:]}
    return {"file": path.name, "seconds": seconds}


def start_flame(pid: int | None, path: Path | None, *, seconds: float) -> asyncio.Task[dict] | None:
    if pid is None or path is None:
        return None
    return asyncio.create_task(flame(pid, path, seconds=seconds))


# --------------------------------------------------------------------------- backlog


class Publisher:
    """One producer with the services' settings, kept open across bursts."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=1, request_timeout_ms=15_000
        )
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.producer.stop()

    async def send(self, messages: list[workloads.Message]) -> float:
        started = time.perf_counter()
        futures = [await self.producer.send(m.topic, m.value, key=m.key) for m in messages]
        await asyncio.gather(*futures)
        self.sent += len(messages)
        return time.perf_counter() - started


async def backlog(
    cluster: Launcher,
    service: Instance,
    make: Callable[[int], list[workloads.Message]],
    *,
    history: int,
    events: int,
    seconds: float,
    progress: Progress,
    flame_to: Path | None = None,
) -> dict:
    """The service's consumption rate over at least ``events`` events and ``seconds`` seconds.

    ``history`` events are published before the service starts and consumed unmeasured (at
    least a few, so the consumer group has joined). Once the service is idle again, ``events``
    events are published in one burst (the producer is many times faster than any consumer,
    so they queue up as a backlog at once); while fewer than ``seconds`` have passed, more are
    added whenever the backlog runs low, so the service never waits for input. The rate is
    what the service's counter has seen from the burst on, up to the moment both bounds are
    passed. ``make(n)`` gives ``n`` new events of the service's workload."""
    chunk = max(500, events // 4)
    async with Publisher(cluster.bootstrap) as publisher, httpx.AsyncClient(timeout=5) as client:
        await publisher.send(make(history))
        await cluster.start([service])
        await _until(client, service, history, progress)
        await quiesce(client, service)
        base = await consumed(client, service)
        first = make(events)
        profile = None
        started = time.monotonic()
        publish_s = await publisher.send(first)
        if flame_to is not None and service.process is not None:
            profile = start_flame(service.process.pid, flame_to, seconds=min(seconds, 20))
        topping: asyncio.Task[float] | None = None
        done = base
        while True:
            done = await consumed(client, service)
            now = time.monotonic()
            progress(done - base)
            if done - base >= events and now - started >= seconds:
                break
            backlog_left = publisher.sent - history - (done - base)
            if now - started < seconds and backlog_left < chunk and (topping is None or topping.done()):
                topping = asyncio.create_task(publisher.send(make(chunk)))
            if now - started > 900 + seconds:
                raise RuntimeError(f"{service.name} consumed {done - base} of {events} measured events in 900 s")
            await asyncio.sleep(0.1)
        elapsed = now - started
        if topping is not None:
            await topping
        flame_result = await profile if profile is not None else None
    measured = done - base
    return {
        "events": history + measured,
        "measured": measured,
        "published": publisher.sent - history,
        "events_per_s": measured / elapsed,
        "seconds": elapsed,
        "publish_s": publish_s,
        "peak_rss_mb": service.peak_rss_mb(),
        "flame": flame_result,
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
        # Four scrapes a second: a scrape refreshes the service's gauges from its database, so
        # polling faster would measure the poller (0.25 s is under 1% of a 30 s measurement).
        await asyncio.sleep(0.25)
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


async def sender_drained(client: httpx.AsyncClient, nurture: Instance, patience: float = 180) -> float:
    """Wait until nurture has sent every e-mail already due (``clientflow_nurture_queue_depth``
    0 in two readings a second apart; the gauge is set when each sender pass starts and ends,
    NaN before the first): a backlog round leaves the e-mails of its tens of thousands of leads
    queued, and the payments step a thousand invoices and receipts; a lead step run meanwhile
    measured that queue, not its own leads (the first ladder step spent 162 ms of nurture CPU
    per lead, the 100x lead step 44 ms). Returns the depth left (0 unless ``patience`` ran
    out; -1 if nurture has no such gauge)."""
    deadline = time.monotonic() + patience
    depth, empty = -1.0, 0
    while time.monotonic() < deadline:
        text = await metrics_text(client, nurture)
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("clientflow_nurture_queue_depth")
        ]
        depth = sum(values) if values else -1.0
        if depth < 0:
            return depth
        empty = empty + 1 if depth == 0 else 0
        if empty >= 2:
            return depth
        await asyncio.sleep(1.0)
    return depth


# --------------------------------------------------------------------------- latency


class Watcher:
    """A plain aiokafka consumer timestamping the first event of each (type, lead) it sees, and
    counting doubles: a second event id for the same e-mail (lead, sequence, step) or the same
    cleared deposit (lead, invoice) is a command applied twice, the benchmark's own check."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=20
        )
        self.seen: dict[tuple[str, str], float] = {}
        # (type, lead, what) -> the event ids seen for it; more than one is a double apply
        self.ids: dict[tuple[str, str, str], set[str]] = {}
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
            kind, lead = event.get("type"), event.get("lead_id")
            key = (kind, lead)
            payload = event.get("data") or {}
            what = f"{payload.get('sequence')}/{payload.get('step')}/{payload.get('invoice_id')}"
            self.ids.setdefault((kind, lead, what), set()).add(str(event.get("event_id")))
            if key not in self.seen:
                self.seen[key] = now
                self._news.set()

    def doubles(self, kind: str, leads: Iterable[str]) -> int:
        """How many of ``leads`` had a ``kind`` event applied twice (two event ids, one fact)."""
        wanted = set(leads)
        return sum(1 for (k, lead, _), ids in self.ids.items() if k == kind and lead in wanted and len(ids) > 1)

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


IN_FLIGHT = 256  # the generator's requests in flight at most (its connection pool's size)


class Poster:
    """The load generator's client for the timed POSTs: aiohttp, which spends about 0.16 ms of
    CPU a request where httpx spent 2.8 ms (measured against an empty ASGI app). The generator
    shares the machine's two cores with what it measures: at 300 requests/s httpx alone took
    most of a core from the services."""

    def __init__(self, headers: dict[str, str], *, timeout_s: float = 30.0) -> None:
        self.headers = headers
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Poster:
        self.session = aiohttp.ClientSession(
            headers=self.headers,
            connector=aiohttp.TCPConnector(limit=IN_FLIGHT, limit_per_host=IN_FLIGHT),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def post(self, url: str, *, json: dict, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """Status, headers (lower-case names) and the JSON body (None when it is not JSON).
        A transport failure raises ``PostError``."""
        assert self.session is not None
        try:
            async with self.session.post(url, json=json, headers=headers) as response:
                body = await response.read()
                answer = {k.lower(): v for k, v in response.headers.items()}
                try:
                    parsed = _json_or_none(body)
                except ValueError:
                    parsed = None
                return response.status, answer, parsed
        except (aiohttp.ClientError, TimeoutError) as error:
            raise PostError(type(error).__name__) from error


class PostError(Exception):
    """A timed POST that got no answer (connection refused or reset, timeout)."""


class Answers:
    """How a step's timed POSTs were answered: accepted (the body returned), refused fast (429 or
    503 with Retry-After, timed from the moment the request left: a wait for a slot in the
    generator is the generator's, not the service's) or failed (by status or error)."""

    def __init__(self) -> None:
        self.refused: list[float] = []
        self.reasons: collections.Counter[str] = collections.Counter()

    async def post(self, http: Poster, url: str, *, json: dict, headers: dict[str, str]) -> Any:
        """The accepted answer's body, else None (counted as refused or failed)."""
        sent_at = time.monotonic()
        try:
            status, answer, body = await http.post(url, json=json, headers=headers)
        except PostError as error:
            self.reasons[str(error)] += 1
            return None
        if status in (429, 503) and "retry-after" in answer:
            self.refused.append(time.monotonic() - sent_at)
            return None
        if status >= 400 or not isinstance(body, dict):
            self.reasons[str(status)] += 1
            return None
        return body

    def summarise(self, summary: dict, unsent: int) -> None:
        summary["failed_requests"] = sum(self.reasons.values()) + unsent
        summary["failures"] = dict(self.reasons)
        summary["refused"] = len(self.refused)
        summary["refused_p99_ms"] = _percentile([r * 1000 for r in self.refused], 99) if self.refused else None


def _json_or_none(body: bytes) -> Any:
    return json.loads(body) if body else None


SLOT_WAIT_S = 30.0  # a request that waits longer for a slot is not sent (counted as failed)


async def open_loop(
    *,
    rate: float,
    seconds: float,
    send: Callable[[int, float], Coroutine[Any, Any, None]],
    progress: Progress,
    unsent: list[int] | None = None,
) -> tuple[float, list[asyncio.Task[None]]]:
    """Fire ``send(i)`` at fixed times t0 + i/rate, whatever the answers take (open loop).

    At most ``IN_FLIGHT`` requests are in flight: thousands waiting in a client's pool made the
    generator take a whole core from the two the system shares (httpx's pool scans every
    waiting request at each change). A request still without a slot after ``SLOT_WAIT_S`` is
    not sent and its index goes to ``unsent``."""
    t0 = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * seconds)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def gated(i: int, planned: float) -> None:
        try:
            await asyncio.wait_for(slots.acquire(), SLOT_WAIT_S)
        except TimeoutError:
            if unsent is not None:
                unsent.append(i)
            return
        try:
            await send(i, planned)
        finally:
            slots.release()

    for i in range(total):
        planned = t0 + i / rate
        delay = planned - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # Latency counts from the planned time: a late generator does not hide a slow system.
        tasks.append(asyncio.create_task(gated(i, planned)))
        if i % 20 == 0:
            progress(i)
    return t0, tasks


def _summary(offered: float, seconds: float, t0: float, intended: dict[str, float], done: dict[str, float]) -> dict:
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
    http: Poster,
    leads: Instance,
    watcher: Watcher,
    *,
    rate: float,
    seconds: float,
    drain_s: float,
    progress: Progress,
    cpu_pids: dict[str, int] | None = None,
    flame_to: dict[int, Path] | None = None,
) -> dict:
    """POST /leads at a fixed rate; latency from the intended send time to its email.sent.

    ``cpu_pids``: the processes (by name) whose CPU time (from the first request to the last e-mail
    or the end of the drain) is divided by the leads completed; ``flame_to``: a py-spy flame
    graph of each of these processes over the sending."""
    tag = uuid.uuid4().hex[:8]
    intended: dict[str, float] = {}
    answers = Answers()

    async def send(i: int, planned: float) -> None:
        body = await answers.post(
            http, f"{leads.url}/leads", json=_lead_body(i, tag), headers={"Idempotency-Key": f"bench-{tag}-{i}"}
        )
        if body is not None and "lead_id" in body:
            intended[body["lead_id"]] = planned
        elif body is not None:
            answers.reasons["no lead_id"] += 1

    pids = cpu_pids or {}
    cpu_before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
    profiles = [start_flame(pid, path, seconds=seconds) for pid, path in (flame_to or {}).items()]
    unsent: list[int] = []
    t0, tasks = await open_loop(rate=rate, seconds=seconds, send=send, progress=progress, unsent=unsent)
    sent_s = time.monotonic() - t0
    await asyncio.gather(*tasks)
    await watcher.wait_for("email.sent", list(intended), drain_s)
    done = {lead: watcher.seen[("email.sent", lead)] for lead in intended if ("email.sent", lead) in watcher.seen}
    by_process = {name: cpu_seconds([pid]) - cpu_before[name] for name, pid in pids.items()}
    cpu = sum(by_process.values())
    summary = _summary(rate, seconds, t0, intended, done)
    answers.summarise(summary, len(unsent))
    summary["accepted"] = len(intended)
    summary["lost"] = len(intended) - len(done)  # accepted (201) but no e-mail within the drain
    summary["duplicates"] = watcher.doubles("email.sent", intended)
    # The generator is the bench's own process: when it could not send on time, the offered
    # load was lower than asked (latency still counts from the planned times).
    summary["sending_s"] = sent_s
    summary["unsent"] = len(unsent)  # of failed_requests: no slot in the generator within SLOT_WAIT_S
    summary["drain_s"] = drain_s
    summary["cpu_s"] = cpu if cpu_pids else None
    summary["cpu_ms_per_lead"] = cpu * 1000 / len(done) if cpu_pids and done else None
    # Which process spent it: a step slower than its load explains shows here.
    summary["cpu_ms_per_lead_by_process"] = (
        {name: round(seconds * 1000 / len(done), 2) for name, seconds in by_process.items()} if done else {}
    )
    summary["held"] = summary["held"] and summary["lost"] == 0 and summary["duplicates"] == 0
    summary["flames"] = [p for p in [await task for task in profiles if task is not None] if p]
    return summary


async def prepare_invoices(
    http: httpx.AsyncClient, bootstrap: str, billing: Instance, count: int, progress: Progress
) -> list[dict]:
    """Deposit invoices to pay: a signed deal (``deal.won``) per new lead published straight to
    the broker, and each deposit invoice once billing has issued it. (Through leads' HTTP API it
    took three requests per invoice, minutes for the thousand the 100/s step needs.)"""
    rng = random.Random(count)
    lead_ids = [uuid.uuid4() for _ in range(count)]
    async with Publisher(bootstrap) as publisher:
        await publisher.send([workloads.deal_won(lead_id, n, rng) for n, lead_id in enumerate(lead_ids)])
    semaphore = asyncio.Semaphore(16)

    async def one(lead_id: uuid.UUID) -> dict | None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            async with semaphore:
                answer = await http.get(f"{billing.url}/invoices", params={"lead_id": str(lead_id)})
            if answer.status_code == 200:
                deposit = next((inv for inv in answer.json() if inv.get("kind") == "deposit"), None)
                if deposit:
                    progress(1)
                    return {
                        "lead_id": str(lead_id),
                        "invoice_id": deposit["invoice_id"],
                        "amount": deposit["amount_due"],
                    }
            await asyncio.sleep(0.5)
        return None

    found = await asyncio.gather(*(one(lead_id) for lead_id in lead_ids))
    return [f for f in found if f]


async def payment_step(
    http: Poster,
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
    answers = Answers()

    async def send(i: int, planned: float) -> None:
        invoice = invoices[i]
        body = await answers.post(
            http,
            f"{billing.url}/payments",
            headers={"Idempotency-Key": f"pay-{invoice['invoice_id']}"},
            json={
                "invoice_id": invoice["invoice_id"],
                "amount": invoice["amount"],
                "currency": "EUR",
                "method": "bank_transfer",
            },
        )
        if body is not None:
            intended[invoice["lead_id"]] = planned

    unsent: list[int] = []
    t0, tasks = await open_loop(rate=rate, seconds=seconds, send=send, progress=progress, unsent=unsent)
    await asyncio.gather(*tasks)
    await watcher.wait_for("deposit.cleared", list(intended), drain_s)
    done = {
        lead: watcher.seen[("deposit.cleared", lead)] for lead in intended if ("deposit.cleared", lead) in watcher.seen
    }
    summary = _summary(rate, seconds, t0, intended, done)
    answers.summarise(summary, len(unsent))
    summary["accepted"] = len(intended)
    summary["lost"] = len(intended) - len(done)
    summary["duplicates"] = watcher.doubles("deposit.cleared", intended)
    summary["unsent"] = len(unsent)
    summary["held"] = summary["held"] and summary["lost"] == 0 and summary["duplicates"] == 0
    return summary


def message_size(messages: list[workloads.Message]) -> int:
    return int(statistics.mean(len(m.value) for m in messages))


def rng(seed: int) -> random.Random:
    return random.Random(seed)

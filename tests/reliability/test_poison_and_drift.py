"""Scenario 4: poison and drift. On every topic the services consume, hypothesis-generated bad
messages (bytes that are not JSON, JSON that is not an envelope, a valid envelope whose payload
is wrong for its type, an unknown type, an older and a newer version) are published with a plain
producer while clients go through the lifecycle over HTTP. Every bad message is dead-lettered
with a reason or skipped and counted, by every service that reads it; no service crashes; every
valid event in between is applied. Then a fault (billing's change orders table refusing writes)
dead-letters valid events, the fault is fixed, and ``clientflow dead-letters replay`` applies them.

What the contract does with ``version`` (shared/events.py): it is "the payload schema version of
this type", an integer >= 1 that readers do not branch on. Every type is at version 1 today, so
an older version (0 or below) is not a valid envelope: dead-lettered (``invalid_envelope``). A
newer version is applied like the current one as long as its payload still fits the type
(readers ignore fields they do not know, at both levels), because producers only ever add
fields: so newer versions with extra fields must be accepted, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine

from shared import topics
from shared.broker import read_to_end, topic_partitions
from shared.events import EVENT_TYPES, Envelope, types_on
from tests.reliability.cluster import ROOT, Cluster
from tests.reliability.conftest import FULL
from tests.reliability.lifecycle import Driver, audit
from tests.support import API_KEY, until

pytestmark = pytest.mark.reliability

PER_CATEGORY = 50 if FULL else 9  # per topic: six categories, so ~300 (full) or ~54 (short) a topic
CLIENTS = 12 if FULL else 4
FAULTED = 8 if FULL else 3  # change requests dead-lettered by the fault, then replayed
CATEGORIES = ("not_json", "not_envelope", "wrong_payload", "unknown_type", "older_version", "newer_version")


# --------------------------------------------------------------------------- what reads what


def consumed_types() -> dict[str, set[str]]:
    """Service -> the event types its consumer applies (from the apps themselves, unconnected)."""
    from clientflow.cli import build_apps

    return {name: set(app.state.runtime._consumer.handlers) for name, app in build_apps().items()}


def readers(handled: dict[str, set[str]]) -> dict[str, set[str]]:
    """Topic -> the services (consumer groups) subscribed to it."""
    found: dict[str, set[str]] = defaultdict(set)
    for service, types in handled.items():
        for event_type in types:
            found[EVENT_TYPES[event_type].topic].add(service)
    return found


# --------------------------------------------------------------------------- generated poison


def generate(strategy: st.SearchStrategy, n: int) -> list[Any]:
    """``n`` (or fewer, when the space is small) examples, the same ones on every run."""
    found: list[Any] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


def _not_envelope(value: bytes) -> bool:
    try:
        Envelope.model_validate_json(value)
    except ValidationError:
        return True
    return False


def _is_json(value: bytes) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


# Text without lone surrogates: JSON escapes them, and the envelope parser rightly refuses them,
# which would turn every category into "not an envelope".
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
WHEN = datetime.now(UTC).isoformat()


def envelope(event_type: str, data: Any, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "version": 1,
        "occurred_at": WHEN,
        "producer": "poison",
        "lead_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "data": data,
        **fields,
    }


def not_json() -> st.SearchStrategy[bytes]:
    truncated = st.builds(
        lambda e, cut: json.dumps(e).encode()[: max(1, cut)], st.just(envelope("deal.won", {})), st.integers(1, 120)
    )
    return (st.binary(max_size=200) | truncated | TEXT.map(str.encode)).filter(lambda b: not _is_json(b))


def not_an_envelope() -> st.SearchStrategy[bytes]:
    # Any JSON at all, and envelopes with one field missing or of the wrong kind.
    broken = st.builds(
        lambda field, bad: json.dumps({**envelope("deal.won", {}), field: bad}),
        st.sampled_from(["event_id", "type", "occurred_at", "producer", "lead_id", "data", "correlation_id"]),
        st.sampled_from([None, 12, "not-a-uuid", [], {"x": 1}, "2026-01-01T00:00:00"]),
    )
    missing = st.builds(
        lambda field: json.dumps({k: v for k, v in envelope("deal.won", {}).items() if k != field}),
        st.sampled_from(["type", "occurred_at", "producer"]),
    )
    return (JSON.map(json.dumps) | broken | missing).map(str.encode).filter(_not_envelope)


BAD_VALUES = ({"nested": [1]}, [[1, 2]], -(10**30), "\u0000not a valid value", True, None)


def wrong_payload(topic: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """An envelope whose data has one field of the type's model with a value of the wrong kind
    (plus keys nobody knows), so it fails that type's payload model."""

    def bad_for(event_type: str) -> st.SearchStrategy[tuple[str, bytes]]:
        model = EVENT_TYPES[event_type].model

        def invalid(data: dict) -> bool:
            try:
                model.model_validate(data)
            except ValidationError:
                return True
            return False

        data = st.builds(
            lambda noise, field, bad: {**noise, field: bad},
            st.dictionaries(TEXT.map(lambda k: f"x_{k}"), JSON, max_size=3),
            st.sampled_from(sorted(model.model_fields)),
            st.sampled_from(BAD_VALUES),
        )
        return data.filter(invalid).map(lambda d: (event_type, json.dumps(envelope(event_type, d)).encode()))

    return st.sampled_from(types_on(topic)).flatmap(bad_for)


def unknown_type(topic: str) -> st.SearchStrategy[bytes]:
    elsewhere = sorted(t for t in EVENT_TYPES if EVENT_TYPES[t].topic != topic)
    made_up = TEXT.filter(lambda t: t not in EVENT_TYPES)
    return (made_up | st.sampled_from(elsewhere)).map(lambda t: json.dumps(envelope(t, {"x": 1})).encode())


def older_version() -> st.SearchStrategy[bytes]:
    return st.integers(max_value=0).map(lambda v: json.dumps(envelope("deal.won", {}, version=v)).encode())


def newer_version(originals: list[dict]) -> st.SearchStrategy[tuple[bytes, bytes]]:
    """A real event again (same event_id: a consumer that applied it says duplicate), as a newer
    producer would write it: a higher version and fields nobody knows, at both levels."""
    extra = st.dictionaries(TEXT.map(lambda k: f"new_{k}"), JSON, min_size=1, max_size=3)
    return st.builds(
        lambda original, version, top, inside: (
            (original.get("lead_id") or original["type"]).encode(),
            json.dumps({**original, **top, "version": version, "data": {**original["data"], **inside}}).encode(),
        ),
        st.sampled_from(originals),
        st.integers(2, 10**6),
        extra,
        extra,
    )


# --------------------------------------------------------------------------- measuring


async def scrape(http: httpx.AsyncClient, cluster: Cluster) -> tuple[Counter, Counter]:
    """(service, topic, type, outcome) -> consumed; (service, topic, reason) -> dead letters."""
    consumed: Counter = Counter()
    dead: Counter = Counter()
    for instance in cluster.instances:
        body = (await http.get(f"{instance.url}/metrics")).text
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "clientflow_events_consumed_total":
                    consumed[labels["service"], labels["topic"], labels["type"], labels["outcome"]] += sample.value
                elif sample.name == "clientflow_dead_letters_total":
                    dead[labels["service"], labels["topic"], labels["reason"]] += sample.value
    return consumed, dead


async def read_topics(bootstrap: str, names: list[str], quiet_s: float = 1.0) -> list[Any]:
    """Every record now on ``names`` (to the end, as retention's replay reads)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [tp for name in names for tp in await topic_partitions(consumer, name)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await read_to_end(consumer, partitions, quiet_s=quiet_s)
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- the fault to fix

BLOCK = {
    "sqlite": [
        "CREATE TRIGGER cf_fault BEFORE INSERT ON change_orders "
        "BEGIN SELECT RAISE(ABORT, 'change orders refuse writes (injected fault)'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION cf_fault() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'change orders refuse writes (injected fault)'; END $$",
        "CREATE TRIGGER cf_fault BEFORE INSERT ON change_orders FOR EACH ROW EXECUTE FUNCTION cf_fault()",
    ],
}
UNBLOCK = {
    "sqlite": ["DROP TRIGGER cf_fault"],
    "postgresql": ["DROP TRIGGER cf_fault ON change_orders", "DROP FUNCTION cf_fault()"],
}


async def run_sql(url: str, statements: list[str]) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def dead_letters_cli(bootstrap: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "clientflow", "dead-letters", *args],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --------------------------------------------------------------------------- the scenario


async def test_poison_and_drift(tmp_path, databases, report) -> None:
    handled = consumed_types()
    groups = readers(handled)
    consumed_topics = sorted(groups)
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=cluster.broker.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    sent: Counter = Counter()  # (topic, category)
    expected_dead: Counter = Counter()  # (service, topic, reason)
    expected_unknown: Counter = Counter()  # (service, topic)
    expected_ignored: Counter = Counter()  # (service, topic, type): wrong payloads of types a group does not apply
    try:
        driver = Driver(cluster)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
            before_consumed, before_dead = await scrape(http, cluster)

            async def poison(topic: str) -> None:
                batches: list[tuple[str, bytes | None, bytes, str | None]] = []  # category, key, value, type
                batches += [("not_json", None, v, None) for v in generate(not_json(), PER_CATEGORY)]
                batches += [("not_envelope", None, v, None) for v in generate(not_an_envelope(), PER_CATEGORY)]
                batches += [("wrong_payload", None, v, t) for t, v in generate(wrong_payload(topic), PER_CATEGORY)]
                batches += [("unknown_type", None, v, None) for v in generate(unknown_type(topic), PER_CATEGORY)]
                batches += [("older_version", None, v, None) for v in generate(older_version(), PER_CATEGORY)]
                for index, (category, key, value, event_type) in enumerate(batches):
                    await producer.send_and_wait(topic, value, key=key or uuid.uuid4().bytes)
                    sent[topic, category] += 1
                    for service in groups[topic]:
                        if category in ("not_json", "not_envelope", "older_version"):
                            expected_dead[service, topic, "invalid_envelope"] += 1
                        elif category == "unknown_type":
                            expected_unknown[service, topic] += 1
                        elif event_type in handled[service]:
                            expected_dead[service, topic, "invalid_payload"] += 1
                        else:
                            expected_ignored[service, topic, event_type] += 1
                    if index % 20 == 19:
                        await asyncio.sleep(0.05)  # let the valid traffic in between

            # Poison on every topic while clients sign and pay (valid events in between).
            async def lifecycle() -> list:
                signed = [
                    c for c in await asyncio.gather(*(driver.capture_and_sign(http, n) for n in range(CLIENTS))) if c
                ]
                await asyncio.gather(*(driver.pay_deposit(http, c) for c in signed))
                return signed

            clients, *_ = await asyncio.gather(lifecycle(), *(poison(t) for t in consumed_topics))
            problems = await audit(cluster, driver.clients)

            # Newer versions of real events: accepted (a duplicate where already applied), never dead-lettered.
            history = await read_topics(cluster.broker.bootstrap_servers, consumed_topics)
            originals: dict[str, list[dict]] = defaultdict(list)
            for record in history:
                try:
                    event = Envelope.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                if (
                    EVENT_TYPES.get(event.type)
                    and EVENT_TYPES[event.type].topic == record.topic
                    and event.producer != "poison"
                ):
                    originals[record.topic].append(json.loads(record.value))
            newer_accepted: Counter = Counter()
            for topic in consumed_topics:
                if not originals[topic]:
                    continue
                for key, value in generate(newer_version(originals[topic]), PER_CATEGORY):
                    await producer.send_and_wait(topic, value, key=key)
                    sent[topic, "newer_version"] += 1
                    event_type = json.loads(value)["type"]
                    for service in groups[topic]:
                        newer_accepted[
                            service, topic, "duplicate" if event_type in handled[service] else "ignored"
                        ] += 1

            async def settled() -> tuple[Counter, Counter] | None:
                consumed, dead = await scrape(http, cluster)
                dead_delta = dead - before_dead
                unknown = Counter(
                    {(s, t): n for (s, t, _type, o), n in (consumed - before_consumed).items() if o == "unknown_type"}
                )
                if dead_delta == expected_dead and unknown == expected_unknown:
                    return consumed, dead
                return None

            measured = await until(settled, timeout=180 if FULL else 60)
            consumed, dead = measured or await scrape(http, cluster)
            delta = consumed - before_consumed
            dlq = await read_topics(cluster.broker.bootstrap_servers, [topics.dlq(t) for t in consumed_topics])
            dlq_by: Counter = Counter()
            without_reason = 0
            for record in dlq:
                headers = {k: v.decode() for k, v in record.headers}
                if not headers.get("x-dlq-reason"):
                    without_reason += 1
                dlq_by[headers.get("x-consumer-group"), headers.get("x-origin-topic"), headers.get("x-dlq-reason")] += 1

            # No crash: every process alive, ready, and (above) every lifecycle effect in place.
            alive = sum(1 for i in cluster.instances if i.process is not None and i.process.poll() is None)
            ready = 0
            for instance in cluster.instances:
                ready += (await http.get(f"{instance.url}/health/ready")).status_code == 200

            # A fault dead-letters valid events; fixed, the replay applies them, once.
            replay_figures = await fault_fix_replay(cluster, driver, http, [c for c in clients if c.deal_id][:FAULTED])
            alive_after = sum(1 for i in cluster.instances if i.process is not None and i.process.poll() is None)

        total_sent = sum(sent.values())
        figures = {
            "topics poisoned (consumed by a service)": ", ".join(consumed_topics),
            "poison messages sent": total_sent,
            "by category": ", ".join(f"{c} {sum(n for (_, cat), n in sent.items() if cat == c)}" for c in CATEGORIES),
            "dead-lettered (a copy per service reading the topic), by reason": ", ".join(
                f"{r} {int(sum(n for (_, _, reason), n in (dead - before_dead).items() if reason == r))}"
                for r in ("invalid_envelope", "invalid_payload")
            ),
            "dead letters on the .dlq topics without a reason header": without_reason,
            "skipped and counted (unknown_type)": int(
                sum(n for (_, _, _, o), n in delta.items() if o == "unknown_type")
            ),
            "wrong payloads of types a service does not apply (counted ignored)": sum(expected_ignored.values()),
            "newer versions accepted (duplicate or ignored, none dead-lettered)": sum(newer_accepted.values()),
            "topics without valid events to copy as a newer version": ", ".join(
                t for t in consumed_topics if not originals[t]
            )
            or "none",
            "valid lifecycle clients / unsettled effects": f"{len(driver.clients)} / {sum(problems.values())}",
            "consumer crashes (processes gone or not ready)": (len(cluster.instances) - alive)
            + (len(cluster.instances) - ready),
            **replay_figures,
            "scenario time (s)": round(time.monotonic() - started, 1),
        }
        report.add("Poison and drift (generated bad messages on every topic; dead-letter replay)", figures)

        assert problems == {"unsettled": 0}, problems
        assert measured is not None, {
            "dead (expected, measured)": (expected_dead, dead - before_dead),
            "unknown (expected)": expected_unknown,
        }
        assert without_reason == 0
        for (service, topic, reason), n in expected_dead.items():
            assert dlq_by[service, topic, reason] == n, (service, topic, reason, dlq_by)
        newer_dead = [k for k, n in (dead - before_dead).items() if k not in expected_dead or n != expected_dead[k]]
        assert newer_dead == [], "a newer version was dead-lettered"
        assert alive == alive_after == ready == len(cluster.instances), "a consumer crashed"
        assert replay_figures["change requests applied after the replay"] == FAULTED
        assert replay_figures["sent again by a second replay"] == 0
    finally:
        await producer.stop()
        await cluster.stop()


async def fault_fix_replay(
    cluster: Cluster, driver: Driver, http: httpx.AsyncClient, clients: list
) -> dict[str, object]:
    """Billing's change orders table refuses writes (an injected fault: a bad migration, say):
    change requests are dead-lettered (``handler_error``) after the retries. The fault fixed,
    ``clientflow dead-letters replay deals --reason handler_error`` sends them again and billing
    applies each once; nurture and retention, which applied them the first time, see duplicates."""
    url = cluster.database_urls["billing"]
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    bootstrap = cluster.broker.bootstrap_servers
    _, dead_before = await scrape(http, cluster)
    await run_sql(url, BLOCK[backend])
    requests = []
    for n, client in enumerate(clients):
        response = await driver._post(
            http,
            "leads",
            f"/deals/{client.deal_id}/change-requests",
            {"description": f"extra landing page {n}", "in_scope": False, "amount": "300", "currency": "EUR"},
            f"change-{client.deal_id}",
        )
        assert response is not None and response.status_code == 201, response.text if response else None
        requests.append(response.json()["request_id"])

    async def all_dead() -> bool:
        _, dead = await scrape(http, cluster)
        return dead[("billing", "deals", "handler_error")] - dead_before[("billing", "deals", "handler_error")] >= len(
            clients
        )

    faulted = await until(all_dead, timeout=90)
    orders_while_broken = await _orders(http, cluster, clients)
    await run_sql(url, UNBLOCK[backend])
    listed = dead_letters_cli(bootstrap, "list", "--topic", "deals")
    dry = dead_letters_cli(bootstrap, "replay", "deals", "--reason", "handler_error", "--dry-run")
    first = dead_letters_cli(bootstrap, "replay", "deals", "--reason", "handler_error")

    async def applied() -> bool:
        return await _orders(http, cluster, clients) == len(clients)

    await until(applied, timeout=60)
    second = dead_letters_cli(bootstrap, "replay", "deals", "--reason", "handler_error")
    await asyncio.sleep(1.0)  # anything a second replay sent would be applied by now
    orders = await _orders(http, cluster, clients)
    assert faulted, "the fault did not dead-letter the change requests"
    assert "handler_error" in listed, listed
    assert f"would replay {len(clients)} " in dry, dry
    assert f"replayed {len(clients)} " in first, first
    return {
        "valid events dead-lettered by the injected fault (handler_error)": len(clients),
        "change orders in billing while the fault lasted": orders_while_broken,
        "replayed by `clientflow dead-letters replay deals --reason handler_error`": len(clients),
        "change requests applied after the replay": orders,
        "sent again by a second replay": 0 if "replayed 0 " in second else second.strip(),
    }


async def _orders(http: httpx.AsyncClient, cluster: Cluster, clients: list) -> int:
    total = 0
    for client in clients:
        response = await http.get(f"{cluster.url('billing')}/change-orders", params={"lead_id": client.lead_id})
        total += len(response.json()) if response.status_code == 200 else 0
    return total

"""Scenario 8: one slow request never stops a service. With a few thousand clients behind
them, 10 parallel `GET /economics`, 10 parallel `GET /funnel` and a CSV import of thousands of
rows run at once against real processes, while every service's `/health/live` is probed every
20 ms. Its p99 must stay under 50 ms on every service (before: 10.8 s on retention, 4.9 s on
leads, 11-29 s on nurture during the import), and the event-loop lag each service measures
itself is reported."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from shared import events as ev
from tests.reliability.cluster import SERVICES, Cluster
from tests.reliability.conftest import FULL
from tests.support import API_KEY, event, producer, until

pytestmark = pytest.mark.reliability

CLIENTS = 3000 if FULL else 600
IMPORT_ROWS = 5000 if FULL else 1500
READERS = 10
PROBE_EVERY_S = 0.02
# The target, alone on the machine (`make reliability`, which still misses it on SQLite: an open
# problem, see the report). In `make test` the scenario shares the two cores with the other test
# worker, so it asserts only that no loop is held for seconds (the old code answered health
# checks after 5-29 s here; SQLite's nurture still stalls a few hundred ms under this load).
P99_LIMIT_S = 0.05 if FULL else 1.0


async def seed_clients(bootstrap: str, count: int) -> None:
    """Clients as retention learns them from the wire: captured, won, deposit paid, a retainer."""
    start = datetime.now(UTC) - timedelta(days=400)
    async with producer(bootstrap) as p:
        for n in range(count):
            lead_id = uuid.uuid4()
            at = start + timedelta(hours=3 * n)
            deal_id, invoice_id = uuid.uuid4(), uuid.uuid4()
            channel = ("website", "referral", "ads", "cold_outreach")[n % 4]
            envelopes = [
                event(
                    "lead.captured",
                    ev.LeadCaptured(
                        name=f"Client {n}",
                        email=f"client{n}-{lead_id.hex[:6]}@loop.example",
                        channel=channel,
                        fit_score=60,
                        consent_marketing=False,
                        segment="default",
                    ),
                    lead_id=lead_id,
                    producer_name="leads",
                ),
                event(
                    "deal.won",
                    ev.DealWon(
                        deal_id=deal_id,
                        title="Retainer",
                        kind="retainer",
                        currency="EUR",
                        total=Decimal("2000"),
                        monthly_fee=Decimal("2000"),
                        signed_by="Client",
                        signed_at=at,
                        deposit_share=Decimal("0.3"),
                        channel=channel,
                    ),
                    lead_id=lead_id,
                    producer_name="leads",
                ),
                event(
                    "payment.succeeded",
                    ev.PaymentSucceeded(
                        payment_id=uuid.uuid4(),
                        invoice_id=invoice_id,
                        amount=Decimal("600"),
                        currency="EUR",
                        method="card",
                        paid_at=at,
                        invoice_paid=True,
                    ),
                    lead_id=lead_id,
                    producer_name="billing",
                ),
                event(
                    "deposit.cleared",
                    ev.DepositCleared(
                        deal_id=deal_id, invoice_id=invoice_id, amount=Decimal("600"), currency="EUR", cleared_at=at
                    ),
                    lead_id=lead_id,
                    producer_name="billing",
                ),
                event(
                    "subscription.started",
                    ev.SubscriptionStarted(
                        subscription_id=uuid.uuid4(),
                        deal_id=deal_id,
                        monthly_fee=Decimal("2000"),
                        currency="EUR",
                        started_at=at,
                    ),
                    lead_id=lead_id,
                    producer_name="billing",
                ),
            ]
            for envelope in envelopes:
                await p.send(ev.topic_of(envelope.type), envelope.model_dump_json().encode(), key=envelope.key)
        await p.flush()


def import_file(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["name", "email", "company", "channel", "country", "timezone", "budget", "currency", "consent_marketing"]
    )
    for n in range(rows):
        tag = uuid.uuid4().hex[:8]
        writer.writerow(
            [
                f"Imported {n}",
                f"imp{n}-{tag}@import{tag}.example",
                f"Company {tag}",
                "website",
                "GB",
                "Europe/London",
                "5000",
                "EUR",
                "false",
            ]
        )
    return out.getvalue().encode()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.timeout(1200 if FULL else 400)
async def test_a_slow_request_never_stops_a_service(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases, partitions=3)
    await cluster.start()
    try:
        assert cluster.broker is not None
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(headers=auth, timeout=300) as http:
            started = time.monotonic()
            await seed_clients(cluster.broker.bootstrap_servers, CLIENTS)

            async def known() -> bool:
                clients = (await http.get(f"{cluster.url('retention')}/clients", params={"limit": 1})).json()
                return clients.get("total", 0) >= CLIENTS

            assert await until(known, timeout=300 if FULL else 120, interval=1), (
                "retention did not learn the seeded clients"
            )

            async def settled() -> bool:
                # Every service caught up with the seeded events (nurture enrolls, billing
                # bills, retention scores them): the load below is the scenario's, not the
                # tail of the seeding's.
                for service in SERVICES:
                    text = (await http.get(f"{cluster.url(service)}/metrics")).text
                    backlog = [
                        float(v)
                        for v in re.findall(r"^clientflow_(?:consumer_lag|outbox_backlog)\{[^}]*\} (\S+)", text, re.M)
                    ]
                    if any(backlog):
                        return False
                return True

            assert await until(settled, timeout=300 if FULL else 120, interval=1), "the services did not catch up"
            seeded_s = time.monotonic() - started

            probes: dict[str, list[float]] = {s: [] for s in SERVICES}
            failures: dict[str, int] = dict.fromkeys(SERVICES, 0)
            stop = asyncio.Event()

            async def probe(service: str) -> None:
                url = f"{cluster.url(service)}/health/live"
                async with httpx.AsyncClient(timeout=30) as prober:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        try:
                            ok = (await prober.get(url)).status_code == 200
                        except httpx.HTTPError:
                            ok = False
                        probes[service].append(time.perf_counter() - t0)
                        failures[service] += not ok
                        await asyncio.sleep(PROBE_EVERY_S)

            probers = [asyncio.create_task(probe(s)) for s in SERVICES]
            await asyncio.sleep(1)  # a baseline before the load
            load_started = time.monotonic()
            body = import_file(IMPORT_ROWS)
            loads = [
                *(http.get(f"{cluster.url('retention')}/economics") for _ in range(READERS)),
                *(http.get(f"{cluster.url('leads')}/funnel") for _ in range(READERS)),
                http.post(f"{cluster.url('leads')}/leads/import", content=body, headers={"content-type": "text/csv"}),
            ]
            answers = await asyncio.gather(*loads)
            load_s = time.monotonic() - load_started
            await asyncio.sleep(2)  # the import's events reach nurture and the others meanwhile
            stop.set()
            await asyncio.gather(*probers)
            assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers if a.status_code != 200]
            imported = answers[-1].json()
            assert imported["accepted"] + imported["duplicates"] == IMPORT_ROWS, imported

            lag = {}
            for service in SERVICES:
                text = (await http.get(f"{cluster.url(service)}/metrics")).text
                count = float(re.search(r"clientflow_event_loop_lag_seconds_count\{[^}]*\} (\S+)", text).group(1))
                over = float(
                    re.search(r'clientflow_event_loop_lag_seconds_bucket\{le="0\.05"[^}]*\} (\S+)', text).group(1)
                )
                lag[service] = (count, count - over)
        figures: dict[str, object] = {
            "clients seeded (events on the wire)": f"{CLIENTS} ({CLIENTS * 5} events, every service caught up in {seeded_s:.1f} s)",
            "load": f"{READERS} GET /economics + {READERS} GET /funnel + a {IMPORT_ROWS}-row import, at once ({load_s:.1f} s)",
            "import": f"{imported['accepted']} accepted, {imported['rejected']} rejected",
        }
        for service in SERVICES:
            samples = probes[service]
            figures[f"{service} /health/live"] = (
                f"{len(samples)} probes, p50 {statistics.median(samples) * 1000:.1f} ms, "
                f"p99 {p99(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms, {failures[service]} failed"
            )
            figures[f"{service} event-loop lag"] = (
                f"{lag[service][1]:.0f} of {lag[service][0]:.0f} timers over 50 ms late"
            )
        report.add("8. A slow request beside a health probe", figures)
        for service in SERVICES:
            assert failures[service] == 0, f"{service}: {failures[service]} probes failed"
            assert p99(probes[service]) < P99_LIMIT_S, (
                f"{service}: /health/live p99 {p99(probes[service]) * 1000:.0f} ms"
            )
    finally:
        await cluster.stop()

"""Scenario 7: erasure. One person goes through the whole lifecycle (captured with distinctive
personal data, e-mailed, a retainer won and its deposit paid, feedback with a comment, a
cancellation with a comment), then is erased (DELETE /leads/{lead_id}). Once ``lead.erased`` has
been applied everywhere, nothing of the person is left in any table of the four databases
(every column, outbox and idempotency answers included), in the sent mail store or in any
service's log; the amounts (invoices, payments, revenue) remain. The audit trail of every
service (append-only, so an erasure cannot touch it) is scanned on its own: it never held the
person's data (ids only), and its rows about the lead are all still there after the erasure."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from services.retention.replay import replay
from services.retention.settings import Settings as RetentionSettings
from shared import topics
from shared.settings import ServiceSettings
from tests.reliability.cluster import SERVICES, Cluster
from tests.reliability.lifecycle import Client, Driver
from tests.reliability.topic_scan import scan_topics
from tests.support import API_KEY, TopicReader, producer, until

pytestmark = pytest.mark.reliability


def person() -> dict[str, str]:
    """Personal data no other test writes (and that no template or fixture contains)."""
    tag = uuid.uuid4().hex[:6]
    return {
        "name": f"Zebediah Quillfeather{tag}",
        "first": "Zebediah",
        "email": f"zeb.quill{tag}@quillworks-{tag}.example",
        "company": f"Quillworks Foundry {tag}",
        "phone": "+44 7700 900461",
        "job": f"Chief Quill Officer {tag}",
        "tag": tag,
    }


def needles(p: dict[str, str]) -> dict[str, str]:
    """What must not be found anywhere, by what it is (lowercase; the search ignores case)."""
    return {
        "name": p["name"].lower(),
        "first name": p["first"].lower(),
        "surname": "quillfeather",
        "email": p["email"].lower(),
        "email domain": p["email"].split("@")[1].lower(),
        "company": "quillworks foundry",
        "phone": "7700 900461",
        "phone digits": "7700900461",
        "job title": "chief quill officer",
    }


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


async def dump_database(url: str) -> list[tuple[str, str, str]]:
    """Every value of every column of every table, as text: (table, column, value)."""
    engine = create_async_engine(url)
    found: list[tuple[str, str, str]] = []
    try:
        async with engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(metadata.reflect)
            for table in metadata.sorted_tables:
                for row in await connection.execute(select(table)):
                    for column, value in zip(table.columns.keys(), row, strict=True):
                        if value is not None:
                            found.append((table.name, column, _text(value)))
    finally:
        await engine.dispose()
    return found


async def applied(url: str, event_type: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(metadata.reflect, only=["inbox"])
            inbox = metadata.tables["inbox"]
            return int(await connection.scalar(select(func.count()).where(inbox.c.event_type == event_type)))
    finally:
        await engine.dispose()


async def person_keys(url: str, lead_id: str) -> list[bool]:
    """Whether each of the person's keys in one service's ``person_keys`` table is destroyed."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(metadata.reflect, only=["person_keys"])
            keys = metadata.tables["person_keys"]
            rows = await connection.execute(
                select(keys.c.destroyed_at, keys.c.wrapped).where(keys.c.subject_id == uuid.UUID(lead_id))
            )
            return [destroyed is not None and wrapped is None for destroyed, wrapped in rows]
    finally:
        await engine.dispose()


@dataclass
class Scan:
    found: list[str] = field(default_factory=list)
    values: int = 0
    mail_files: int = 0
    log_files: int = 0
    audit_values: dict[str, int] = field(default_factory=dict)  # values scanned in each service's audit_log

    @property
    def in_audit(self) -> list[str]:
        return [f for f in self.found if f.split(":")[0].split(".")[1:2] == ["audit_log"]]


async def scan(cluster: Cluster, workdir: Path, wanted: dict[str, str]) -> Scan:
    """Where the person's data is: every database value, every mail file, every log line."""
    result = Scan()
    for service in SERVICES:
        result.audit_values[service] = 0
        for table, column, value in await dump_database(cluster.database_urls[service]):
            result.values += 1
            result.audit_values[service] += table == "audit_log"
            result.found += [f"{service}.{table}.{column}: {what}" for what in leaks(value, wanted)]
    await asyncio.to_thread(_scan_files, result, workdir, wanted)
    return result


def _scan_files(result: Scan, workdir: Path, wanted: dict[str, str]) -> None:
    """The mail files and log lines of ``scan``: blocking reads, so run off the event loop."""
    mail = [f for f in (workdir / "mail").rglob("*") if f.is_file()] if (workdir / "mail").exists() else []
    result.mail_files = len(mail)
    for path in mail:
        result.found += [
            f"mail {path.name}: {what}" for what in leaks(path.read_bytes().decode(errors="replace"), wanted)
        ]
    logs = sorted(workdir.glob("*.log"))
    result.log_files = len(logs)
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            result.found += [f"{path.name}:{number}: {what}" for what in leaks(line, wanted)]


async def audit_of(http: httpx.AsyncClient, url: str, lead_id: str) -> list[dict]:
    """One service's audit rows about ``lead_id`` (GET /audit, every page)."""
    items: list[dict] = []
    after = 0
    while True:
        page = (await http.get(f"{url}/audit", params={"lead_id": lead_id, "after_id": after, "limit": 1000})).json()
        items += page["items"]
        if page["next_after_id"] is None:
            return items
        after = page["next_after_id"]


async def economics_of(settings: RetentionSettings, database_url: str, period: dict[str, str]) -> dict:
    """``GET /economics`` as the rebuilt store answers it (the live one's figures, recomputed)."""
    from prometheus_client import CollectorRegistry

    from services.retention import economics
    from services.retention.api import economics_out
    from services.retention.context import Context
    from services.retention.metrics import RetentionMetrics
    from shared.clock import make_clock
    from shared.db import create_engine
    from shared.uow import UnitOfWorkFactory

    engine = create_engine(database_url)
    try:
        uow = UnitOfWorkFactory(engine, producer="retention", clock=make_clock("system"))
        ctx = Context(settings=settings, metrics=RetentionMetrics(CollectorRegistry(), uow.sessions))
        start = datetime.fromisoformat(period["from"]).replace(tzinfo=UTC)
        end = datetime.fromisoformat(period["to"]).replace(tzinfo=UTC)
        async with uow() as tx:
            figures = await economics.economics(tx, ctx, start=start, end=end, channel=None, currency="EUR")
        snap = economics.Snapshot(0, 0, 0, {}, {}, datetime.now(UTC))
        return json.loads(economics_out(figures, snap).model_dump_json(by_alias=True))
    finally:
        await engine.dispose()


def leaks(haystack: str, wanted: dict[str, str]) -> list[str]:
    lowered = haystack.lower()
    return [what for what, needle in wanted.items() if needle in lowered]


async def test_erasure(tmp_path: Path, databases, report) -> None:
    started = time.monotonic()
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    p = person()
    try:
        driver = Driver(cluster)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
            url = cluster.url
            lead = await driver._post(
                http,
                "leads",
                "/leads",
                {
                    "name": p["name"],
                    "email": p["email"],
                    "company": p["company"],
                    "job_title": p["job"],
                    "industry": "software",
                    "employees": 12,
                    "country": "GB",
                    "channel": "website",
                    "campaign": f"quillworks-{p['tag']}",
                    "utm": {"source": f"quillworks-{p['tag']}"},
                    "consent_marketing": True,
                    "budget": "9000",
                    "currency": "EUR",
                    "brief": f"{p['first']} wants a new shop; call {p['phone']}",
                    "timeline": f"before {p['first']}'s launch",
                    "needs": [f"seo for {p['company']}"],
                    "legal_basis": "consent",
                },
                f"erasure-lead-{p['tag']}",
            )
            assert lead is not None and lead.status_code == 201, lead.text if lead else None
            client = Client(lead.json()["lead_id"])
            lead_id = client.lead_id

            async def emailed() -> bool:
                messages = (await http.get(f"{url('nurture')}/leads/{lead_id}/messages")).json()
                return bool(messages)

            assert await until(emailed, timeout=30), "no e-mail was sent to the person"

            deal = await driver._post(
                http,
                "leads",
                f"/leads/{lead_id}/deals",
                {
                    "title": "Retainer",
                    "kind": "retainer",
                    "currency": "EUR",
                    "monthly_fee": "1500",
                    "included_hours": "10",
                },
                f"erasure-deal-{p['tag']}",
            )
            assert deal is not None and deal.status_code == 201, deal.text if deal else None
            client.deal_id = deal.json()["deal_id"]
            won = await driver._post(
                http, "leads", f"/deals/{client.deal_id}/won", {"signed_by": p["name"]}, f"erasure-won-{p['tag']}"
            )
            assert won is not None and won.status_code < 300, won.text if won else None
            assert await driver.pay_deposit(http, client, timeout=60)

            async def subscribed() -> bool:
                subs = (await http.get(f"{url('billing')}/subscriptions", params={"lead_id": lead_id})).json()
                seen = await http.get(f"{url('retention')}/clients/{lead_id}")
                known = seen.status_code == 200 and seen.json().get("subscription_status") == "active"
                return known and any(s["status"] == "active" for s in subs)

            assert await until(subscribed, timeout=60), "the retainer did not start"
            feedback = await driver._post(
                http,
                "nurture",
                "/feedback",
                {
                    "lead_id": lead_id,
                    "survey": "onboarding",
                    "score": 4,
                    "comment": f"{p['first']} here from {p['company']}: ring me on {p['phone']} or {p['email']}",
                },
                f"erasure-feedback-{p['tag']}",
            )
            assert feedback is not None and feedback.status_code == 201, feedback.text if feedback else None
            asked = await driver._post(
                http,
                "retention",
                f"/clients/{lead_id}/cancellation",
                {
                    "reason": "price",
                    "comment": f"{p['company']} is moving on. {p['name']}, {p['phone']}",
                },
                f"erasure-cancel-{p['tag']}",
            )
            assert asked is not None and asked.status_code < 300, asked.text if asked else None
            confirmed = await driver._post(
                http,
                "retention",
                f"/cancellations/{asked.json()['cancellation_id']}/confirm",
                {},
                f"erasure-confirm-{p['tag']}",
            )
            assert confirmed is not None and confirmed.status_code < 300, confirmed.text if confirmed else None

            async def cancelled() -> bool:
                subs = (await http.get(f"{url('billing')}/subscriptions", params={"lead_id": lead_id})).json()
                stage = (await http.get(f"{url('leads')}/leads/{lead_id}")).json().get("stage")
                return stage == "churned" and all(s["status"] == "cancelled" for s in subs)

            assert await until(cancelled, timeout=60), "the cancellation did not reach billing and leads"
            invoices_before = (await http.get(f"{url('billing')}/invoices", params={"lead_id": lead_id})).json()

            # They asked for a copy of their data: every service's part crossed the exports topic.
            asked_export = await http.post(
                f"{url('leads')}/leads/{lead_id}/export", headers={"Idempotency-Key": f"export-{p['tag']}"}
            )
            assert asked_export.status_code == 202, asked_export.text
            export_id = asked_export.json()["export_id"]

            async def exported() -> bool:
                answer = await http.get(f"{url('leads')}/exports/{export_id}")
                return answer.status_code == 200 and answer.json()["status"] == "complete"

            assert await until(exported, timeout=60), "the export did not complete"
            document = (await http.get(f"{url('leads')}/exports/{export_id}/download")).text
            assert p["email"] in document and p["phone"] in document

            # A copy of their capture that no service can apply (its fit score broken, its sealed
            # fields intact): each consumer dead-letters it, so the dead-letter topic holds them too.
            bootstrap = cluster.broker.bootstrap_servers if cluster.broker else ""
            async with TopicReader(bootstrap, topics.LEADS) as reader:
                (capture,) = await reader.wait_for("lead.captured", lead_id=lead_id)
                (wire,) = reader.events("lead.captured", lead_id=lead_id, sealed=True)
            assert wire.sealed is not None and capture.data["name"] == p["name"]
            poison = wire.model_copy(update={"data": {**wire.data, "fit_score": "high"}})
            async with producer(bootstrap) as kafka:
                await kafka.send_and_wait(topics.LEADS, poison.model_dump_json().encode(), key=lead_id.encode())

            async def dead_lettered() -> bool:
                async with TopicReader(bootstrap, topics.dlq(topics.LEADS)) as dlq:
                    await dlq._poll()
                    await dlq._poll()
                    return len(dlq.events("lead.captured", lead_id=lead_id, sealed=True)) >= 3

            assert await until(dead_lettered, timeout=30), "the poison copy was not dead-lettered by the consumers"

            # The scan finds the person before the erasure (so finding nothing after means something).
            before = await scan(cluster, tmp_path, needles(p))
            master = ServiceSettings().master_key_ring()
            topics_before = await scan_topics(bootstrap, needles(p), master)
            trails_before = {s: await audit_of(http, url(s), lead_id) for s in SERVICES}

            erased_at = time.monotonic()
            erased = await http.request(
                "DELETE", f"{url('leads')}/leads/{lead_id}", headers={"Idempotency-Key": f"erase-{p['tag']}"}
            )
            assert erased.status_code == 200, erased.text

            async def everywhere() -> bool:
                counts = [
                    await applied(cluster.database_urls[s], "lead.erased") for s in ("nurture", "billing", "retention")
                ]
                return all(counts)

            assert await until(everywhere, timeout=60), "lead.erased was not applied everywhere"
            propagated = time.monotonic() - erased_at
            await asyncio.sleep(1.0)  # what the erasures emitted is published (outbox marked sent)

            async def keys_destroyed() -> bool:
                keys = [await person_keys(cluster.database_urls[s], lead_id) for s in SERVICES]
                return all(rows and all(destroyed for destroyed in rows) for rows in keys)

            assert await until(keys_destroyed, timeout=60), "the destroyed keys did not reach every service"
            topics_after = await scan_topics(bootstrap, needles(p), master)
            # Replay after the erasure: the same figures, none of the person.
            rebuilt_url = f"sqlite+aiosqlite:///{tmp_path / 'retention-rebuilt.db'}"
            replay_settings = RetentionSettings(
                kafka_bootstrap_servers=bootstrap,
                database_url=cluster.database_urls["retention"],
                api_key=API_KEY,
                environment="test",
            )
            replayed = await replay(replay_settings, database_url=rebuilt_url)
            today = datetime.now(UTC).date()
            period = {"from": f"{today.replace(day=1)}", "to": f"{today + timedelta(days=2)}", "currency": "EUR"}
            live_figures = (await http.get(f"{url('retention')}/economics", params=period)).json()
            rebuilt_figures = await economics_of(replay_settings, rebuilt_url, period)

            invoices = (await http.get(f"{url('billing')}/invoices", params={"lead_id": lead_id})).json()
            view = (await http.get(f"{url('retention')}/clients/{lead_id}")).json()
            # What each service's audit trail says about the lead, once the erasure is over.
            trails = {s: await audit_of(http, url(s), lead_id) for s in SERVICES}

        after = await scan(cluster, tmp_path, needles(p))
        found = after.found
        rebuilt_found = [
            f"rebuilt retention.{table}.{column}: {what}"
            for table, column, value in await dump_database(rebuilt_url)
            for what in leaks(value, needles(p))
        ]
        paid = sum(Decimal(i["amount_paid"]) for i in invoices)
        revenue = sum(Decimal(r["amount"]) for r in view.get("revenue", []))
        figures = {
            "lifecycle before the erasure": "captured, e-mailed, retainer won, deposit paid, feedback, cancelled",
            "time for lead.erased to be applied in nurture, billing, retention (s)": round(propagated, 1),
            "values scanned in the four databases": after.values,
            "mail files / log files scanned (after)": f"{after.mail_files} / {after.log_files}",
            "places holding personal data before / after the erasure (databases, mail, logs)": (
                f"{len(before.found)} / {len(found)}"
            ),
            "records read on every topic and dead-letter topic (before / after)": (
                f"{topics_before.records} / {topics_after.records} on {topics_after.topics} topics"
            ),
            "records holding the person in any decodable form, before / after": (
                f"{len(topics_before.found)} / {len(topics_after.found)}"
            ),
            "topics and dead-letter topics where the person was before (now unreadable)": ", ".join(
                sorted({f.split("[")[0] for f in topics_before.found})
            ),
            "sealed events opened before / after (with the keys the keys topic keeps)": (
                f"{topics_before.opened} of {topics_before.sealed} / {topics_after.opened} of {topics_after.sealed}"
            ),
            "person keys destroyed (wrapped keys superseded, dropped by compaction)": (
                f"{topics_after.destroyed_keys} ({topics_after.superseded})"
            ),
            "replay of retention after the erasure: events applied, read without the person's key": (
                f"{replayed.applied}, {replayed.shredded}"
            ),
            "places holding the person in the rebuilt retention store": len(rebuilt_found),
            "where it was before (now gone)": ", ".join(
                sorted({f.split(":")[0].rsplit(".", 1)[0] for f in before.found if not f.startswith("mail ")})
            )
            + ", mail files",
            "invoices kept (before / after), amount paid kept": f"{len(invoices_before)} / {len(invoices)}, {paid} EUR",
            "retention revenue kept": f"{revenue} EUR",
            "audit_log values scanned (before / after the erasure)": (
                f"{sum(before.audit_values.values())} / {sum(after.audit_values.values())}"
            ),
            "personal data in any audit_log (before / after)": f"{len(before.in_audit)} / {len(after.in_audit)}",
            "audit rows about the lead before / after the erasure (leads, nurture, billing, retention)": ", ".join(
                f"{len(trails_before[s])} / {len(trails[s])}" for s in SERVICES
            ),
            "scenario time (s)": round(time.monotonic() - started, 1),
        }
        report.add("Erasure (one person after a full lifecycle)", figures)
        assert found == [], "\n".join(sorted(set(found))[:60])
        # The topics: before, a key holder reads the person in the leads, deals, engagement and
        # dead-letter topics; after, in no form on any topic.
        assert topics_before.found and any(".dlq" in f for f in topics_before.found), topics_before.found
        assert {f.split("[")[0] for f in topics_before.found} >= {
            "leads",
            "deals",
            "engagement",
            "exports",
            "leads.dlq",
        }
        assert topics_after.found == [], "\n".join(topics_after.found[:60])
        assert topics_after.sealed >= topics_before.sealed > 0 and topics_after.unreadable >= topics_before.sealed
        # Replay after the erasure: the same figures, and nothing of the person in the rebuilt store.
        assert rebuilt_found == [], rebuilt_found
        assert replayed.shredded > 0 and not replayed.rejected, replayed.rejected
        same = ("new_clients", "logo_churn", "revenue_churn", "nrr", "grr", "ltv", "cac", "churn_split")
        assert {k: rebuilt_figures.get(k) for k in same} == {k: live_figures.get(k) for k in same}
        # The audit trails: scanned, never holding the person (ids only), and still telling who
        # did what to the lead, the capture and the erasure included.
        assert all(after.audit_values[s] > 0 for s in SERVICES), after.audit_values
        assert before.in_audit == [] and after.in_audit == [], before.in_audit + after.in_audit
        actions = {row["action"] for row in trails["leads"]}
        assert {"POST /leads", "DELETE /leads/{lead_id}"} <= actions, actions
        assert all(trails[s] for s in SERVICES), {s: len(t) for s, t in trails.items()}
        kept = {s: {r["id"] for r in trails_before[s]} <= {r["id"] for r in trails[s]} for s in SERVICES}
        assert all(kept.values()), f"audit rows about the lead lost in the erasure: {kept}"
        assert all(row["lead_id"] == lead_id for t in trails.values() for row in t)
        assert any(f.startswith("mail ") for f in before.found), "the scan saw no mail to the person"
        assert any(".leads." in f for f in before.found), "the scan saw no lead before the erasure"
        assert len(invoices) == len(invoices_before) >= 1
        assert paid == client.paid > 0
        assert revenue == client.paid
    finally:
        await cluster.stop()

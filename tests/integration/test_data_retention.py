"""Retention of data on the real broker and database, with a business clock moved by the test:
leads disqualified or lost longer than their settings are erased by the scheduled job (and
``lead.erased`` goes out as after ``DELETE /leads/{id}``), younger ones and clients are kept, a
lead the erasure fails on is counted and stops nobody else; audit rows older than their
retention are purged in recorded chunks while younger ones stay, and no other deletion of
the audit trail is let through; dead-letter topics are made with their retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError

from services.leads import data_retention, privacy
from services.leads.app import create_app
from services.leads.settings import Settings
from shared import data_retention as data_retention_shared
from shared import topics
from shared.access.authn import wall_now
from shared.broker import DAY_MS, ensure_topics
from shared.clock import SimulatedClock
from shared.data_retention import AuditPurgeRow
from shared.db import AuditRow, JobFailureRow
from shared.events import Actor
from tests.support import TopicReader, as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration

START = datetime(2031, 5, 5, 9, tzinfo=UTC)
DISQUALIFIED_DAYS, LOST_DAYS, AUDIT_DAYS = 30, 60, 90


class ManualClock(SimulatedClock):
    """Business time moved only by the test (not by the shared clock topic)."""

    simulated = False


def person(tag: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "email": f"{name.lower()}.{tag}@retention-{tag}.example",
        "company": f"{name} Ltd",
        "channel": "website",
        "budget": "9000",
        "currency": "EUR",
        "brief": "SEO for our shop",
        "needs": ["seo"],
        "consent_marketing": True,
    }


async def capture(leads, tag: str, name: str) -> str:
    return as_json(await leads.client.post("/leads", json=person(tag, name)))["lead_id"]


async def disqualify(leads, lead_id: str) -> None:
    answer = as_json(await leads.client.post(f"/leads/{lead_id}/qualification", json={"reasons": ["competitor"]}))
    assert answer["qualified"] is False, answer


async def deal(leads, lead_id: str) -> str:
    body = {
        "title": "Shop SEO",
        "kind": "project",
        "currency": "EUR",
        "lines": [{"description": "Audit", "hours": "10", "amount": "1500"}],
    }
    return as_json(await leads.client.post(f"/leads/{lead_id}/deals", json=body))["deal_id"]


async def lose(leads, lead_id: str) -> None:
    as_json(await leads.client.post(f"/deals/{await deal(leads, lead_id)}/lost", json={"reason": "went elsewhere"}))


async def erased(leads, lead_id: str) -> bool:
    return bool(as_json(await leads.client.get(f"/leads/{lead_id}"))["erased"])


def sample(leads, name: str, what: str) -> float:
    value = leads.runtime.registry.get_sample_value(name, {"service": "leads", "what": what})
    return value or 0.0


async def counts(leads, name: str, what: str, expected: float) -> None:
    """Wait until the counter says ``expected`` (a pass counts as it goes)."""

    async def check() -> bool:
        return sample(leads, name, what) == expected

    try:
        await eventually(check, timeout=10)
    except TimeoutError:
        raise AssertionError(f"{name}{{what={what}}} is {sample(leads, name, what)}, not {expected}") from None


async def audit_rows(leads, *, before: datetime | None = None) -> int:
    await leads.runtime.audit.flush()
    query = select(func.count()).select_from(AuditRow)
    if before is not None:
        query = query.where(AuditRow.at < before)
    async with leads.runtime.uow.sessions() as session:
        return int(await session.scalar(query) or 0)


async def test_expired_leads_are_erased_and_old_audit_rows_purged(
    kafka_bootstrap: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(START)
    tag = uuid.uuid4().hex[:8]
    settings = service_settings(
        Settings,
        bootstrap=kafka_bootstrap,
        database_url=database_url,
        disqualified_retention_days=DISQUALIFIED_DAYS,
        lost_retention_days=LOST_DAYS,
        audit_retention_days=AUDIT_DAYS,
    )
    # One lead the erasure fails on, as a row whose data the erasure cannot handle would.
    bad: set[str] = set()
    erase = privacy.erase_lead

    async def erase_or_fail(tx, ctx, lead_id):  # type: ignore[no-untyped-def]
        if str(lead_id) in bad:
            raise ValueError(f"lead {lead_id}: a value the erasure cannot handle")
        return await erase(tx, ctx, lead_id)

    monkeypatch.setattr(data_retention.privacy, "erase_lead", erase_or_fail)

    async with (
        run_service(create_app(settings, clock=clock), settings.port) as leads,
        TopicReader(kafka_bootstrap, topics.LEADS) as bus,
    ):
        # Day 0: two disqualified (one the erasure fails on), one whose deal was lost, and a
        # client: a won deal, a lost one beside it, and moved to disqualified by hand since.
        old_disqualified = await capture(leads, tag, "Ada")
        failing = await capture(leads, tag, "Bea")
        old_lost = await capture(leads, tag, "Cyd")
        client = await capture(leads, tag, "Dov")
        await disqualify(leads, old_disqualified)
        await disqualify(leads, failing)
        bad.add(failing)
        await lose(leads, old_lost)
        as_json(await leads.client.post(f"/deals/{await deal(leads, client)}/won", json={"signed_by": "Dov"}))
        await lose(leads, client)
        as_json(
            await leads.client.post(f"/leads/{client}/stage", json={"stage": "disqualified", "reason": "no more work"})
        )

        # Day 20: one disqualified and one lost later (younger), and someone still in play.
        clock.advance_to(START + timedelta(days=20))
        young_disqualified = await capture(leads, tag, "Eli")
        young_lost = await capture(leads, tag, "Fay")
        in_play = await capture(leads, tag, "Gus")
        await disqualify(leads, young_disqualified)
        await lose(leads, young_lost)
        await deal(leads, in_play)

        # Day 31: the disqualified of day 0 is past its 30 days; the one the erasure fails on
        # is counted and stops nobody.
        clock.advance_to(START + timedelta(days=31))
        await eventually(lambda: erased(leads, old_disqualified))
        (gone,) = await bus.wait_for("lead.erased", lead_id=old_disqualified)
        assert gone.actor is not None and gone.actor.kind == "system" and gone.actor.id == "leads"

        async def counted() -> bool:
            return sample(leads, "clientflow_data_retention_errors_total", "disqualified") >= 1

        await eventually(counted)
        for kept in (failing, old_lost, client, young_disqualified, young_lost, in_play):
            assert not await erased(leads, kept), kept
        await counts(leads, "clientflow_data_retention_erased_total", "disqualified", 1)
        assert sample(leads, "clientflow_data_retention_erased_total", "lost") == 0
        # What the job did is in the audit trail, as the system.
        await leads.runtime.audit.flush()
        async with leads.runtime.uow.sessions() as session:
            (row,) = (
                await session.scalars(
                    select(AuditRow).where(
                        AuditRow.lead_id == uuid.UUID(old_disqualified), AuditRow.actor_kind == "system"
                    )
                )
            ).all()
        assert (row.actor_id, row.action, row.outcome) == ("leads", "data retention: erase disqualified", "ok")

        # Day 61: the lost of day 0 (60 days) and the disqualified of day 20 (41 > 30) go; the
        # lost of day 20 (41 < 60), the client and the lead in play stay.
        clock.advance_to(START + timedelta(days=61))
        await eventually(lambda: erased(leads, old_lost))
        await eventually(lambda: erased(leads, young_disqualified))
        await bus.wait_for("lead.erased", lead_id=old_lost)
        for kept in (failing, client, young_lost, in_play):
            assert not await erased(leads, kept), kept
        await counts(leads, "clientflow_data_retention_erased_total", "lost", 1)
        await counts(leads, "clientflow_data_retention_erased_total", "disqualified", 2)

        # Every failed attempt is counted once, and kept with its reason for the next try.
        async def failure_counted() -> bool:
            async with leads.runtime.uow.sessions() as session:
                failure = await session.get(JobFailureRow, (data_retention.JOB, failing))
            assert failure is not None and "cannot handle" in failure.reason
            errors = sample(leads, "clientflow_data_retention_errors_total", "disqualified")
            return failure.attempts >= 2 and errors == failure.attempts

        await eventually(failure_counted)

        # Day 91: the lost of day 20 has had its 60 days; the client and the lead in play never go.
        clock.advance_to(START + timedelta(days=91))
        await eventually(lambda: erased(leads, young_lost))
        await counts(leads, "clientflow_data_retention_erased_total", "lost", 2)
        assert not await erased(leads, client) and not await erased(leads, in_play)


async def test_audit_rows_past_their_retention_are_purged(kafka_bootstrap: str, database_url: str) -> None:
    clock = ManualClock(START)
    settings = service_settings(
        Settings, bootstrap=kafka_bootstrap, database_url=database_url, audit_retention_days=AUDIT_DAYS
    )
    async with run_service(create_app(settings, clock=clock), settings.port) as leads:
        lead_id = await capture(leads, uuid.uuid4().hex[:8], "Hal")  # a fresh row of a real request
        audit = leads.runtime.audit
        sessions = leads.runtime.uow.sessions
        # Rows are stamped on the real clock (access is security): rows of long ago, as a trail
        # kept for years holds them, and one just inside the retention.
        now = wall_now()

        def old(days: float, count: int) -> None:
            for _ in range(count):
                audit.record(
                    at=now - timedelta(days=days),
                    actor=Actor(kind="integration", id="bootstrap", role="admin"),
                    action="GET /leads/{lead_id}",
                    lead_id=uuid.UUID(lead_id),
                    request_id=uuid.uuid4().hex,
                    status=200,
                )

        old(AUDIT_DAYS + 200, 3)
        old(AUDIT_DAYS + 1, 2)
        old(AUDIT_DAYS - 1, 1)
        fresh = await audit_rows(leads, before=now - timedelta(days=AUDIT_DAYS - 2))
        assert fresh == 6

        # Nothing but a purge may delete from the audit trail (append-only: its trigger refuses).
        with pytest.raises(DBAPIError, match="append-only"):
            async with sessions() as session, session.begin():
                await session.execute(delete(AuditRow).where(AuditRow.at > now - timedelta(days=AUDIT_DAYS)))
        assert await audit_rows(leads) > 6

        # In bounded chunks, each recorded before it deletes.
        purged = await data_retention_shared.purge_audit(
            sessions, retention_days=AUDIT_DAYS, metrics=leads.runtime.metrics, chunk=2, now=now
        )
        assert purged == 5
        async with sessions() as session:
            permits = (await session.scalars(select(AuditPurgeRow).order_by(AuditPurgeRow.id))).all()
        assert [p.deleted for p in permits] == [2, 2, 1]
        assert {p.cutoff for p in permits} == {now - timedelta(days=AUDIT_DAYS)}
        assert await audit_rows(leads, before=now - timedelta(days=AUDIT_DAYS)) == 0
        assert await audit_rows(leads, before=now - timedelta(days=AUDIT_DAYS - 2)) == 1  # the younger one stays
        assert sample(leads, "clientflow_data_retention_purged_total", "audit_rows") == 5

        # The scheduled job does the same whenever the business clock moves (and every hour).
        old(AUDIT_DAYS + 30, 4)
        await audit.flush()
        clock.advance_to(START + timedelta(days=1))
        await counts(leads, "clientflow_data_retention_purged_total", "audit_rows", 9)
        assert await audit_rows(leads, before=wall_now() - timedelta(days=AUDIT_DAYS)) == 0
        # What is left still answers GET /audit: the person's request rows and the younger one.
        page = as_json(await leads.client.get(f"/audit?lead_id={lead_id}"))
        assert len(page["items"]) >= 2


async def test_topics_are_made_with_their_retention(kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"retention-{tag}", topics.dlq(f"retention-{tag}")]
    created = await ensure_topics(kafka_bootstrap, partitions=1, names=names, dead_letter_retention_days=30)
    assert created == names
    assert await _retention_ms(kafka_bootstrap, names[1]) == str(30 * DAY_MS)
    # The setting changed since: the topic is set to it where the broker allows; where it does
    # not (the embedded Tansu), that is logged and the start goes on.
    assert await ensure_topics(kafka_bootstrap, partitions=1, names=names, dead_letter_retention_days=10) == []
    altered = await _retention_ms(kafka_bootstrap, names[1])
    assert altered == str(10 * DAY_MS) or any("could not set the retention" in r.message for r in caplog.records)


async def _retention_ms(bootstrap: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        ((_code, _message, _type, _name, entries, *_),) = response.resources
        return str({e[0]: e[1] for e in entries}["retention.ms"])
    finally:
        await admin.close()

"""Takeovers that end: a takeover an inbound reply started ends by itself after five business
days (a weekend inside does not count), its owner is told a business day before, a person may
extend it; a takeover a person started lasts until they end it, with a reminder each week; one
takeover the scheduled pass fails on does not stop another from ending. Against the embedded
broker and a real database, on a business clock moved by the test."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.nurture import takeover as takeover_cases
from services.nurture.app import create_app
from services.nurture.store import Takeover
from shared import topics
from shared.db import JobFailureRow
from shared.uow import UnitOfWork
from tests.integration.test_nurture_sequences import T0, ManualClock, capture, captured, settings_for
from tests.support import TopicReader, as_json, eventually, run_service

pytestmark = pytest.mark.integration

WEDNESDAY = T0 + timedelta(days=2)  # T0 is a Monday: five business days from Wednesday span a weekend
END = WEDNESDAY + timedelta(days=7)  # the next Wednesday, noon
MINUTE = timedelta(minutes=1)


async def known(svc: Any, bootstrap: str, owner: uuid.UUID) -> uuid.UUID:
    """A person nurture knows, whose lead ``owner`` owns."""
    lead_id = uuid.uuid4()
    await capture(svc, bootstrap, lead_id, captured(consent=True).model_copy(update={"owner_id": owner}))
    return lead_id


async def reply_from(svc: Any, lead_id: uuid.UUID) -> None:
    """The person writes back (a person with the webhook's permission says whose it is)."""
    body = {"from": "ada@analytical.example", "subject": "Re: hello", "text": "Can we talk?", "lead_id": str(lead_id)}
    answer = await svc.client.post("/webhooks/inbound", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["takeover_started"] is True


async def shown(svc: Any, lead_id: uuid.UUID) -> dict[str, Any]:
    return as_json(await svc.client.get(f"/leads/{lead_id}/takeover"))


async def tasks_of(svc: Any, lead_id: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    found = as_json(await svc.client.get("/tasks", params={"status": "all", "lead_id": str(lead_id)}))
    return [task for task in found if task["kind"] == kind]


def at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


async def test_a_reply_takeover_ends_after_five_business_days_unless_extended(
    kafka_bootstrap: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    clock = ManualClock(T0)
    owner = uuid.uuid4()
    async with (
        run_service(create_app(settings, clock=clock), settings.port) as svc,
        TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader,
    ):
        plain, extended, poisoned = [await known(svc, kafka_bootstrap, owner) for _ in range(3)]
        clock.advance_to(WEDNESDAY)
        for lead_id in (plain, extended, poisoned):
            await reply_from(svc, lead_id)
        view = await shown(svc, plain)
        assert (view["started_by_kind"], view["active"]) == ("reply", True)
        assert at(view["ends_at"]) == END

        # A person keeps one longer: two business days more (Friday).
        pushed = await svc.client.post(f"/leads/{extended}/takeover/extend", json={"days": 2})
        assert pushed.status_code == 200, pushed.text
        assert at(pushed.json()["ends_at"]) == END + timedelta(days=2)
        assert (await svc.client.post(f"/leads/{extended}/takeover/extend", json={"days": 0})).status_code == 422
        assert (await svc.client.post(f"/leads/{uuid.uuid4()}/takeover/extend", json={"days": 1})).status_code in (
            404,
            409,
        )

        # One takeover the pass fails on: the others are not held up by it.
        original = takeover_cases.review_takeover

        async def failing(tx: UnitOfWork, row: Takeover, **kwargs: Any) -> bool:
            if row.lead_id == poisoned:
                raise RuntimeError("a takeover the pass cannot handle")
            return await original(tx, row, **kwargs)

        monkeypatch.setattr(takeover_cases, "review_takeover", failing)

        # Calendar day 5 (Monday), then 6 (Tuesday, business day 4): a notice, no end.
        clock.advance_to(END - timedelta(days=2) + MINUTE)
        clock.advance_to(END - timedelta(days=1) + MINUTE)

        async def notice() -> list[dict[str, Any]]:
            return await tasks_of(svc, plain, "takeover_ending")

        (told,) = await eventually(notice)
        assert told["owner_id"] == str(owner) and at(told["due_at"]) == END
        assert (await shown(svc, plain))["active"] is True
        assert await tasks_of(svc, extended, "takeover_ending") == []

        # Business day 5: the plain one ends by itself; the extended one and the poisoned one stay.
        clock.advance_to(END + MINUTE)
        (ended,) = await reader.wait_for("takeover.ended", lead_id=plain)
        assert ended.data["by"] == "system"
        view = await shown(svc, plain)
        assert (view["active"], view["ended_by"]) == (False, "system")
        assert (await shown(svc, extended))["active"] is True
        assert (await shown(svc, poisoned))["active"] is True
        async with svc.runtime.uow.sessions() as session:
            failed = await session.scalar(select(JobFailureRow).where(JobFailureRow.job == takeover_cases.JOB))
        assert failed is not None and "cannot handle" in failed.reason

        # The extended one is told a business day before its new end, then ends on Friday.
        clock.advance_to(END + timedelta(days=1) + MINUTE)
        (told,) = await eventually(lambda: tasks_of(svc, extended, "takeover_ending"))
        assert at(told["due_at"]) == END + timedelta(days=2)
        clock.advance_to(END + timedelta(days=2) + MINUTE)
        (ended,) = await reader.wait_for("takeover.ended", lead_id=extended)
        assert ended.data["by"] == "system"
        # Ended: nothing left to extend.
        assert (await svc.client.post(f"/leads/{plain}/takeover/extend", json={"days": 1})).status_code == 409


async def test_a_person_takeover_lasts_and_reminds_its_owner_once_a_week(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    clock = ManualClock(T0)
    owner = uuid.uuid4()
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        lead_id = await known(svc, kafka_bootstrap, owner)
        started = await svc.client.post(f"/leads/{lead_id}/takeover", json={"by": "maria@agency.example"})
        assert started.status_code == 201, started.text
        assert (started.json()["started_by_kind"], started.json()["ends_at"]) == ("person", None)
        # A person's takeover has no end to move.
        assert (await svc.client.post(f"/leads/{lead_id}/takeover/extend", json={"days": 1})).status_code == 409

        async def reminders(count: int) -> list[dict[str, Any]]:
            found = await tasks_of(svc, lead_id, "takeover_open")
            return found if len(found) >= count else []

        clock.advance_to(T0 + timedelta(days=7) + MINUTE)
        (first,) = await eventually(lambda: reminders(1))
        assert first["owner_id"] == str(owner)
        clock.advance_to(T0 + timedelta(days=10))  # the same week: no second reminder
        clock.advance_to(T0 + timedelta(days=14) + MINUTE)
        found = await eventually(lambda: reminders(2))
        assert len(found) == 2
        clock.advance_to(T0 + timedelta(days=15))
        view = await shown(svc, lead_id)
        assert (view["active"], view["started_by_kind"], view["ends_at"]) == (True, "person", None)
        assert len(await tasks_of(svc, lead_id, "takeover_open")) == 2

        ended = await svc.client.delete(f"/leads/{lead_id}/takeover", params={"by": "maria"})
        assert ended.status_code == 200 and ended.json()["ended_by"] == "maria"

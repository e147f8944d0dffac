"""Tasks: whose list a task goes on, when it is due, open, snoozed or overdue (pure rules and
their settings), and a consumed batch of task events ending where one at a time ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.nurture import domain
from services.nurture import tasks as task_cases
from services.nurture.app import create_app
from services.nurture.settings import Settings
from services.nurture.store import Base, Contact, Task
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import PlumbingBase, create_engine
from tests.unit.test_outbox_inbox import record

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
OWNER, ACCOUNT = uuid.uuid4(), uuid.uuid4()


def test_each_kind_goes_to_its_owner() -> None:
    both = {"owner_id": OWNER, "account_owner_id": ACCOUNT}
    sales_only = {"owner_id": OWNER, "account_owner_id": None}
    assert domain.task_owner("reply", **both) == OWNER
    for kind in ("complaint", "churn_risk", "let_go_review"):
        assert domain.task_owner(kind, **both) == ACCOUNT
        assert domain.task_owner(kind, **sales_only) == OWNER
    assert domain.task_owner("dunning_blocked", **both) == ACCOUNT
    assert domain.task_owner("dunning_blocked", **sales_only) is None  # an admin's pool
    assert domain.task_owner("reply", owner_id=None, account_owner_id=ACCOUNT) is None


def test_a_snooze_that_ran_out_is_open_and_only_open_tasks_are_overdue() -> None:
    later = T0 + timedelta(hours=1)
    assert domain.task_status("snoozed", later, now=T0) == "snoozed"
    assert domain.task_status("snoozed", later, now=later) == "open"
    assert domain.task_status("done", None, now=T0) == "done"
    assert domain.task_status("open", None, now=T0) == "open"
    due = T0 - timedelta(minutes=1)
    assert domain.is_overdue("open", None, due, now=T0)
    assert not domain.is_overdue("open", None, T0, now=T0)
    assert not domain.is_overdue("snoozed", later, due, now=T0)
    assert domain.is_overdue("snoozed", later, due, now=later)
    assert not domain.is_overdue("done", None, due, now=T0)


def test_only_a_move_into_a_blocking_state_or_to_fire_raises_one() -> None:
    assert domain.blocks_service("warning", "blocked")
    assert domain.blocks_service(None, "cancelled")
    assert not domain.blocks_service("blocked", "cancelled")  # still blocked: the task exists
    assert not domain.blocks_service("overdue", "warning")
    assert not domain.blocks_service("blocked", "clear")
    assert domain.lets_go("fire") and not domain.lets_go("tolerable")


def test_due_hours_are_settings_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings().tasks
    assert {kind: defaults.due_in(kind) for kind in domain.DUE_HOURS} == {
        "reply": timedelta(hours=4),
        "complaint": timedelta(hours=24),
        "churn_risk": timedelta(hours=48),
        "dunning_blocked": timedelta(hours=24),
        "let_go_review": timedelta(hours=72),
        "hours_underused": timedelta(hours=48),
    }
    assert domain.DEFAULT_TASKS.due_in("churn_risk") == timedelta(hours=48)
    monkeypatch.setenv("NURTURE_TASKS_HOURS_UNDERUSED_DUE_HOURS", "12")
    assert Settings().tasks.due_in("hours_underused") == timedelta(hours=12)
    monkeypatch.setenv("NURTURE_TASKS_DUNNING_DUE_HOURS", "2")
    monkeypatch.setenv("NURTURE_TASKS_LET_GO_DUE_HOURS", "100")
    changed = Settings(tasks_reply_due_hours=1).tasks
    assert (changed.due_in("dunning_blocked"), changed.due_in("let_go_review"), changed.due_in("reply")) == (
        timedelta(hours=2),
        timedelta(hours=100),
        timedelta(hours=1),
    )


class ManualClock(SimulatedClock):
    simulated = False


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    engines = []

    async def build(name: str) -> Any:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        engines.append(engine)
        async with engine.begin() as conn:
            await conn.run_sync(PlumbingBase.metadata.create_all)
            await conn.run_sync(Base.metadata.create_all)
        settings = Settings(database_url="sqlite+aiosqlite://", data_dir=tmp_path / name, migrate_on_start=False)
        return create_app(settings, engine=engine, clock=ManualClock(T0))

    yield build
    for engine in engines:
        await engine.dispose()


async def consume(app: Any, events: list[ev.Envelope]) -> None:
    records = [record(e, i, topic=ev.topic_of(e.type)) for i, e in enumerate(events)]
    await app.state.runtime._consumer.handle(records)


def story() -> list[ev.Envelope]:
    """A lead captured with an owner, given an account owner, a task raised without an owner,
    the same task raised again, another closed in the same batch, a churn risk."""
    lead_id, rep, success = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def on(event_type: str, payload: ev.Payload) -> ev.Envelope:
        return ev.make_event(event_type, payload, producer="test", occurred_at=T0, lead_id=lead_id)

    def raised(source: str, owner_id: uuid.UUID | None) -> ev.TaskRaised:
        return ev.TaskRaised(
            task_id=uuid.uuid5(uuid.NAMESPACE_URL, source),
            kind="next_step",
            title="Call Ada",
            owner_id=owner_id,
            due_at=T0 + timedelta(hours=4),
            source=source,
        )

    capture = ev.LeadCaptured(name="Ada", email="ada@tasks.example", channel="website", fit_score=70, owner_id=rep)
    return [
        on("lead.captured", capture),
        on("lead.assigned", ev.LeadAssigned(owner_id=success, role="account", reason="deal won")),
        on("task.raised", raised("next_step:a", None)),
        on("task.raised", raised("next_step:a", None)),  # raised again: a new event, the same task
        on("task.raised", raised("next_step:b", success)),
        on("task.closed", ev.TaskClosed(task_id=uuid.uuid5(uuid.NAMESPACE_URL, "next_step:b"), reason="met")),
        on("churn_risk.raised", ev.ChurnRiskRaised(reasons=["quiet"])),
    ]


async def state(app: Any) -> dict[str, Any]:
    async with app.state.runtime.uow.sessions() as session:
        contacts = [(c.owner_id, c.account_owner_id) for c in await session.scalars(select(Contact))]
        found = sorted(
            (t.kind, t.source.split(":")[0], t.status, t.owner_id, t.due_at, t.closed_reason)
            for t in await session.scalars(select(Task))
        )
    return {"contacts": contacts, "tasks": found}


async def test_a_batch_of_task_events_ends_where_one_at_a_time_ends(make) -> None:
    events = story()
    together, alone = await make("together"), await make("alone")
    await consume(together, events)
    for one in events:
        await consume(alone, [one])
    expected = await state(alone)
    assert await state(together) == expected
    ((rep, success),) = expected["contacts"]
    assert expected["tasks"] == sorted(
        [
            ("churn_risk", "churn_risk", "open", success, T0 + timedelta(hours=48), None),
            ("next_step", "next_step", "done", success, T0 + timedelta(hours=4), "met"),
            ("next_step", "next_step", "open", rep, T0 + timedelta(hours=4), None),
        ]
    )
    async with together.state.runtime.uow() as tx:
        assert await task_cases.open_and_overdue(tx, now=T0 + timedelta(hours=5)) == {
            "churn_risk": (1, 0),
            "next_step": (1, 1),
        }

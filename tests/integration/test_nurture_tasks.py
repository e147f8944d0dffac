"""Tasks in one place, with owner and due date: tasks other services raise on the ``tasks`` topic
and those nurture raises itself, listed by owner, status and due date, snoozed, handed on and
closed, against the embedded broker and a real database."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.nurture.app import create_app
from services.nurture.store import Task
from shared import events as ev
from shared.access.principal import new_token, token_hash, token_prefix
from tests.integration.test_nurture_sequences import T0, ManualClock, applied, captured, send, settings_for
from tests.support import as_json, event, run_service

pytestmark = pytest.mark.integration

TASKS = uuid.UUID("6f1c2b1e-3c55-4a8e-9a53-2d1f0a7c5e10")  # as leads names a task from its source


def raised(
    lead_id: uuid.UUID, *, owner_id: uuid.UUID | None, due_at: datetime, source: str | None = None
) -> ev.Envelope:
    source = source or f"next_step:{uuid.uuid4()}"
    payload = ev.TaskRaised(
        task_id=uuid.uuid5(TASKS, source),
        kind="next_step",
        title="Ada: send the estimate",
        detail="by phone first",
        owner_id=owner_id,
        due_at=due_at,
        source=source,
    )
    return event("task.raised", payload, lead_id=lead_id, producer_name="leads")


async def happen(svc: Any, bootstrap: str, *envelopes: ev.Envelope) -> None:
    """Publish on the wire and wait until nurture applied each."""
    await send(bootstrap, *envelopes)
    for envelope in envelopes:
        await applied(svc, envelope)


async def person(svc: Any, bootstrap: str, role: str, *, active: bool = True) -> tuple[uuid.UUID, str]:
    """A person of ``role`` with a token, as the people registry (leads) announces them."""
    person_id, token_id = uuid.uuid4(), uuid.uuid4()
    token = new_token(token_id)
    now = datetime.now(UTC)
    state = ev.PersonState(
        person_id=person_id,
        email=f"{role}-{person_id.hex[:8]}@agency.test",
        name=f"A {role}",
        role=role,
        active=active,
        revision=1,
        changed_at=now,
    )
    issued = ev.TokenState(
        token_id=token_id,
        person_id=person_id,
        token_hash=token_hash(token),
        prefix=token_prefix(token),
        created_at=now,
        revision=1,
    )
    await happen(
        svc,
        bootstrap,
        event("person.added", state, producer_name="leads"),
        event("token.created", issued, producer_name="leads"),
    )
    return person_id, token


async def tasks_of(svc: Any, **params: Any) -> list[dict[str, Any]]:
    return as_json(await svc.client.get("/tasks", params={"status": "all"} | params))


async def stored(svc: Any, source: str) -> int:
    async with svc.runtime.uow.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Task).where(Task.source == source)) or 0


async def test_a_task_raised_elsewhere_lands_with_owner_and_due_date_once_and_closes(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    owner, rep = uuid.uuid4(), uuid.uuid4()
    lead_id = uuid.uuid4()
    async with run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc:
        capture = event(
            "lead.captured",
            captured(consent=True).model_copy(update={"owner_id": rep}),
            lead_id=lead_id,
            producer_name="leads",
        )
        first = raised(lead_id, owner_id=owner, due_at=T0 + timedelta(hours=4))
        await happen(svc, kafka_bootstrap, capture, first)

        listed = as_json(
            await svc.client.get(
                "/tasks",
                params={"owner": str(owner), "status": "open", "due_before": (T0 + timedelta(hours=5)).isoformat()},
            )
        )
        assert len(listed) == 1
        task = listed[0]
        assert task["task_id"] == first.data["task_id"] and task["lead_id"] == str(lead_id)
        assert (task["kind"], task["owner_id"], task["status"]) == ("next_step", str(owner), "open")
        assert datetime.fromisoformat(task["due_at"]) == T0 + timedelta(hours=4)
        assert task["overdue"] is False and task["snoozed_until"] is None
        assert (
            as_json(
                await svc.client.get(
                    "/tasks", params={"owner": str(owner), "due_before": (T0 + timedelta(hours=3)).isoformat()}
                )
            )
            == []
        )

        # Delivered again (same event), and raised again by leads (a new event, the same source).
        again = event("task.raised", ev.TaskRaised.model_validate(first.data), lead_id=lead_id, producer_name="leads")
        await happen(svc, kafka_bootstrap, first, again)
        assert await stored(svc, first.data["source"]) == 1
        assert len(await tasks_of(svc, owner=str(owner))) == 1

        # No owner given: the lead's owner, as lead.captured said.
        pooled = raised(lead_id, owner_id=None, due_at=T0 + timedelta(hours=8))
        await happen(svc, kafka_bootstrap, pooled)
        assert [t["task_id"] for t in await tasks_of(svc, owner=str(rep))] == [pooled.data["task_id"]]

        closed = event(
            "task.closed",
            ev.TaskClosed(task_id=first.data["task_id"], reason="reached by call"),
            lead_id=lead_id,
            producer_name="leads",
        )
        await happen(svc, kafka_bootstrap, closed)
        assert as_json(await svc.client.get("/tasks", params={"owner": str(owner)})) == []  # open by default
        (done,) = await tasks_of(svc, owner=str(owner), status="done")
        assert (done["status"], done["closed_reason"]) == ("done", "reached by call")
        assert datetime.fromisoformat(done["done_at"]) == T0


async def test_nurture_raises_its_own_tasks_for_the_owner_or_account_owner(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    rep, success = uuid.uuid4(), uuid.uuid4()
    client, prospect = uuid.uuid4(), uuid.uuid4()

    def on(lead_id: uuid.UUID, event_type: str, payload: ev.Payload, producer: str) -> ev.Envelope:
        return event(event_type, payload, lead_id=lead_id, producer_name=producer)

    async with run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc:
        await happen(
            svc,
            kafka_bootstrap,
            on(client, "lead.captured", captured(consent=True), "leads"),
            on(client, "lead.assigned", ev.LeadAssigned(owner_id=rep, role="lead", reason="round-robin"), "leads"),
            on(client, "lead.assigned", ev.LeadAssigned(owner_id=success, role="account", reason="deal won"), "leads"),
            on(prospect, "lead.captured", captured(consent=True).model_copy(update={"owner_id": rep}), "leads"),
        )
        # Other topics: no order with the leads topic's events, so once those are applied.
        await happen(
            svc,
            kafka_bootstrap,
            on(client, "churn_risk.raised", ev.ChurnRiskRaised(reasons=["late payments"]), "retention"),
            on(
                client,
                "dunning.state_changed",
                ev.DunningStateChanged(invoice_id=uuid.uuid4(), from_state="warning", to_state="blocked"),
                "billing",
            ),
            on(client, "client.tier_changed", ev.ClientTierChanged(from_tier="tolerable", to_tier="fire"), "retention"),
            on(prospect, "client.tier_changed", ev.ClientTierChanged(from_tier=None, to_tier="fire"), "retention"),
            on(
                prospect,
                "dunning.state_changed",
                ev.DunningStateChanged(invoice_id=uuid.uuid4(), from_state="warning", to_state="blocked"),
                "billing",
            ),
            # Still blocked (blocked -> cancelled) and a warning: no more tasks.
            on(
                client,
                "dunning.state_changed",
                ev.DunningStateChanged(invoice_id=uuid.uuid4(), from_state="blocked", to_state="cancelled"),
                "billing",
            ),
            on(
                client,
                "dunning.state_changed",
                ev.DunningStateChanged(invoice_id=uuid.uuid4(), from_state="overdue", to_state="warning"),
                "billing",
            ),
        )
        complaint = await svc.client.post(
            "/feedback", json={"lead_id": str(client), "survey": "onboarding", "score": 2}
        )
        assert complaint.status_code == 201, complaint.text

        def owners(found: list[dict[str, Any]]) -> dict[str, tuple[str | None, datetime]]:
            return {t["kind"]: (t["owner_id"], datetime.fromisoformat(t["due_at"])) for t in found}

        assert owners(await tasks_of(svc, lead_id=str(client))) == {
            "churn_risk": (str(success), T0 + timedelta(hours=48)),
            "dunning_blocked": (str(success), T0 + timedelta(hours=24)),
            "let_go_review": (str(success), T0 + timedelta(hours=72)),
            "complaint": (str(success), T0 + timedelta(hours=24)),
        }
        # Nobody owns the prospect's account: the let-go review goes to its owner, the dunning
        # call to nobody (an admin's pool).
        assert owners(await tasks_of(svc, lead_id=str(prospect))) == {
            "let_go_review": (str(rep), T0 + timedelta(hours=72)),
            "dunning_blocked": (None, T0 + timedelta(hours=24)),
        }
        pool = await tasks_of(svc, owner="none", lead_id=str(prospect))
        assert [t["kind"] for t in pool] == ["dunning_blocked"]


async def test_snooze_owner_me_and_bad_input(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    clock = ManualClock(T0)
    lead_id = uuid.uuid4()
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        rep, token = await person(svc, kafka_bootstrap, "sales")
        success, _ = await person(svc, kafka_bootstrap, "success")
        viewer, _ = await person(svc, kafka_bootstrap, "viewer")
        gone, _ = await person(svc, kafka_bootstrap, "sales", active=False)
        task = raised(lead_id, owner_id=rep, due_at=T0 + timedelta(hours=4))
        await happen(svc, kafka_bootstrap, task)
        task_id = task.data["task_id"]
        as_rep = {"Authorization": f"Bearer {token}"}

        async def mine(status: str = "open") -> list[str]:
            found = as_json(await svc.client.get("/tasks", params={"owner": "me", "status": status}, headers=as_rep))
            return [t["task_id"] for t in found]

        assert await mine() == [task_id]
        me_by_key = await svc.client.get("/tasks", params={"owner": "me"})  # the API key is no person
        assert me_by_key.status_code == 422 and "owner" in me_by_key.text

        snoozed = await svc.client.post(
            f"/tasks/{task_id}/snooze", json={"until": (T0 + timedelta(hours=1)).isoformat()}, headers=as_rep
        )
        assert snoozed.status_code == 200, snoozed.text
        assert snoozed.json()["status"] == "snoozed" and snoozed.json()["overdue"] is False
        assert await mine() == [] and await mine("snoozed") == [task_id]
        past = await svc.client.post(
            f"/tasks/{task_id}/snooze", json={"until": (T0 - timedelta(minutes=1)).isoformat()}
        )
        assert past.status_code == 422 and "until" in past.text

        clock.advance_to(T0 + timedelta(hours=2))  # the snooze ran out: open again
        assert await mine() == [task_id] and await mine("snoozed") == []
        clock.advance_to(T0 + timedelta(hours=5))  # past due
        (late,) = as_json(await svc.client.get("/tasks", params={"owner": "me"}, headers=as_rep))
        assert (late["status"], late["overdue"]) == ("open", True)
        metrics = (await svc.client.get("/metrics")).text
        overdue = re.search(r'^clientflow_nurture_tasks_overdue\{kind="next_step"\} (\S+)$', metrics, re.M)
        assert overdue is not None and float(overdue.group(1)) >= 1
        assert 'clientflow_nurture_tasks_open{kind="next_step"}' in metrics

        for someone in (viewer, gone, uuid.uuid4()):
            refused = await svc.client.put(f"/tasks/{task_id}/owner", json={"owner_id": str(someone)})
            assert refused.status_code == 422 and "owner_id" in refused.text, refused.text
        handed = await svc.client.put(f"/tasks/{task_id}/owner", json={"owner_id": str(success)}, headers=as_rep)
        assert handed.status_code == 200 and handed.json()["owner_id"] == str(success)
        assert await mine() == []

        for params, field in (
            ({"owner": "banana"}, "owner"),
            ({"due_before": "not-a-date"}, "due_before"),
            ({"status": "someday"}, "status"),
        ):
            bad = await svc.client.get("/tasks", params=params)
            assert bad.status_code == 422 and field in bad.text, bad.text
        done = await svc.client.post(f"/tasks/{task_id}/done")
        assert done.status_code == 200 and done.json()["status"] == "done"
        assert (
            await svc.client.post(f"/tasks/{task_id}/snooze", json={"until": "2031-01-01T00:00:00Z"})
        ).status_code == 409
        assert (await svc.client.post(f"/tasks/{uuid.uuid4()}/done")).status_code == 404

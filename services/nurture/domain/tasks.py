"""Tasks: who a task nurture raises goes to, when it is due, when a task counts as open or
overdue, and which events raise one. Pure: every function takes "now" as a value."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

TaskStatus = Literal["open", "done", "snoozed"]
TASK_OPEN: TaskStatus = "open"
TASK_DONE: TaskStatus = "done"
TASK_SNOOZED: TaskStatus = "snoozed"
TASK_STATUSES: tuple[TaskStatus, ...] = (TASK_OPEN, TASK_DONE, TASK_SNOOZED)

# Business hours (plain clock hours on the business clock) from a task nurture raises to its due
# date, by kind: the defaults of the settings' ``tasks`` group.
DUE_HOURS: Mapping[str, float] = {
    "reply": 4,
    "complaint": 24,
    "churn_risk": 48,
    "dunning_blocked": 24,
    "let_go_review": 72,
    "hours_underused": 48,
}
DEFAULT_DUE_HOURS = 24.0  # a kind without its own setting

# Dunning states that hold a client's work: billing's rule (``service_blocked``: ``blocked`` or
# beyond), read here from the states ``dunning.state_changed`` names.
BLOCKING_DUNNING_STATES = frozenset({"blocked", "cancelled"})
LET_GO_TIER = "fire"

# Whose list a task nurture raises goes on: the lead's owner (sales) or, for a client, the
# account owner (success). ``account`` falls back to the lead's owner; ``account_only`` does
# not (nobody: an admin's pool); ``owner_first`` is the lead's owner, else the account owner.
Assignee = Literal["owner", "account", "account_only", "owner_first"]
ASSIGNEES: Mapping[str, Assignee] = {
    "reply": "owner",
    "complaint": "account",
    "churn_risk": "account",
    "hours_underused": "account",
    "dunning_blocked": "account_only",
    "let_go_review": "account",
    "takeover_ending": "owner_first",
    "takeover_open": "owner_first",
}


class TaskPolicy(Protocol):
    """When a task nurture raises is due (the settings' ``tasks`` group provides it)."""

    def due_in(self, kind: str) -> timedelta: ...


@dataclass(frozen=True)
class TaskDue:
    """A task policy as plain values: hours by kind."""

    hours: Mapping[str, float] = field(default_factory=lambda: dict(DUE_HOURS))

    def due_in(self, kind: str) -> timedelta:
        return timedelta(hours=self.hours.get(kind, DEFAULT_DUE_HOURS))


DEFAULT_TASKS = TaskDue()


def task_owner(kind: str, *, owner_id: uuid.UUID | None, account_owner_id: uuid.UUID | None) -> uuid.UUID | None:
    """Who a task of ``kind`` that nurture raises is for, from the lead's owner and account
    owner (None: nobody known, an admin's pool)."""
    match ASSIGNEES.get(kind, "owner"):
        case "account":
            return account_owner_id or owner_id
        case "account_only":
            return account_owner_id
        case "owner_first":
            return owner_id or account_owner_id
        case _:
            return owner_id


def task_status(status: str, snoozed_until: datetime | None, *, now: datetime) -> TaskStatus:
    """What a task is now: a snooze that ran out is open again."""
    if status == TASK_SNOOZED and (snoozed_until is None or snoozed_until <= now):
        return TASK_OPEN
    return TASK_DONE if status == TASK_DONE else TASK_SNOOZED if status == TASK_SNOOZED else TASK_OPEN


def is_overdue(status: str, snoozed_until: datetime | None, due_at: datetime, *, now: datetime) -> bool:
    """Open now and past its due date (a snoozed task is not on anybody's list until it wakes)."""
    return task_status(status, snoozed_until, now=now) == TASK_OPEN and due_at < now


def blocks_service(from_state: str | None, to_state: str) -> bool:
    """A dunning move into a state that holds the client's work (from one that did not)."""
    return to_state in BLOCKING_DUNNING_STATES and from_state not in BLOCKING_DUNNING_STATES


def lets_go(to_tier: str) -> bool:
    """A client moved to the tier whose clients are reviewed for letting go."""
    return to_tier == LET_GO_TIER

"""When dunning chases, holds and blocks a client: the one place that answers it.

The ladder (Kill Bill's overdue ladder, Stripe's smart-retry defaults) counts whole days
past the due date, or past the end of a grace period an expired card started:

- ``retrying``: a soft card decline, retried 1, 3, 5 and 7 days after the first failure;
- ``grace``: an expired card; service is kept until the grace period ends (14 days);
- ``overdue`` from 1 day, ``warning`` from 10, ``blocked`` from 14 (the client's work is
  held: ``service_blocked``), ``cancelled`` from 21 (the subscription ends, ``non_payment``);
- a ``best`` client gets 7 more days at every step and in grace;
- while a human has taken the client over, no state moves (card retries go on);
- ``cancelled`` is the end of the ladder: only a payment (``clear``) ends it.

The numbers are the ``Ladder`` policy; billing's settings read it from the environment
(``BILLING_WARNING_DAYS``...), so a deployment may move a step without touching these rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

DUNNING_STATES = ("retrying", "grace", "overdue", "warning", "blocked", "cancelled", "clear")

# How bad each state is: a subscription shows the worst of its unpaid invoices.
SEVERITY: dict[str | None, int] = {
    None: 0,
    "clear": 0,
    "overdue": 1,
    "retrying": 2,
    "grace": 2,
    "warning": 3,
    "blocked": 4,
    "cancelled": 5,
}

# Declines a retry cannot fix (Stripe's "do not retry" list): the client must act.
HARD_DECLINES = (
    "stolen_card",
    "lost_card",
    "pickup_card",
    "fraudulent",
    "restricted_card",
    "invalid_account",
    "card_not_supported",
    "currency_not_supported",
    "do_not_honor",
    "revocation_of_authorization",
    "security_violation",
    "invalid_number",
)


class Ladder(BaseModel):
    """Kill Bill style overdue ladder, in days past due (or past the grace period's end), with
    the retry schedule and the declines that are never retried or start a grace period."""

    model_config = ConfigDict(frozen=True)

    warning_days: int = Field(default=10, ge=0)
    blocked_days: int = Field(default=14, ge=0)
    cancelled_days: int = Field(default=21, ge=0)
    retry_schedule_days: tuple[int, ...] = Field(
        default=(1, 3, 5, 7), description="days after the first failure to retry a card"
    )
    grace_days: int = Field(default=14, ge=0, description="grace with service kept after an expired card")
    best_extra_days: int = Field(default=7, ge=0, description="extra days at every dunning step for a `best` client")
    hard_decline_codes: frozenset[str] = Field(default=frozenset(HARD_DECLINES))
    grace_decline_codes: frozenset[str] = Field(
        default=frozenset({"expired_card"}), description="declines that start a grace period"
    )

    @model_validator(mode="after")
    def _rises(self) -> Ladder:
        if not self.warning_days <= self.blocked_days <= self.cancelled_days:
            raise ValueError("dunning days must rise: warning <= blocked <= cancelled")
        return self

    def extra(self, tier: str | None) -> int:
        """A ``best`` client gets a longer grace at every step."""
        return self.best_extra_days if tier == "best" else 0

    def grace_until(self, *, declined_at: datetime, tier: str | None) -> datetime:
        """The end of the grace an expired card starts: service is kept until then."""
        return declined_at + timedelta(days=self.grace_days + self.extra(tier))


def classify_decline(code: str | None, *, hard_codes: frozenset[str], grace_codes: frozenset[str]) -> str:
    """``hard`` (never retried: stolen card, closed account), ``grace`` (expired card: the
    client must update it; service kept meanwhile) or ``soft`` (retried on the schedule)."""
    if code in grace_codes:
        return "grace"
    if code in hard_codes:
        return "hard"
    return "soft"


def next_retry_at(*, first_failed_at: datetime, retries_done: int, ladder: Ladder) -> datetime | None:
    """When the next retry is due, counted from the first failure (1, 3, 5, 7 days after it
    by default, as Stripe's and Kill Bill's examples); None when the schedule is used up."""
    if retries_done >= len(ladder.retry_schedule_days):
        return None
    return first_failed_at + timedelta(days=ladder.retry_schedule_days[retries_done])


def retry_after_decline(
    *, kind: str, hard_declined: bool, first_failed_at: datetime, retries_done: int, ladder: Ladder
) -> datetime | None:
    """When a declined card is tried again: never after a hard decline (the client must act),
    not during an expired card's grace (they must update it), else on the schedule."""
    if hard_declined or kind == "grace":
        return None
    return next_retry_at(first_failed_at=first_failed_at, retries_done=retries_done, ladder=ladder)


def retry_due(*, next_retry_at: datetime | None, hard_declined: bool, now: datetime) -> bool:
    """A scheduled retry has come (card retries go on while a human has the client)."""
    return next_retry_at is not None and next_retry_at <= now and not hard_declined


def dunning_state(
    *,
    now: datetime,
    due_at: datetime,
    grace_until: datetime | None,
    retrying: bool,
    tier: str | None,
    ladder: Ladder,
) -> str | None:
    """Where an unpaid invoice stands. The ladder counts from the due date, or from the end
    of a grace period (an expired card keeps service until then). None: nothing to chase."""
    if grace_until is not None and now < grace_until:
        return "grace"
    start = max(due_at, grace_until) if grace_until is not None else due_at
    days = (now - start).days if now > start else -1
    extra = ladder.extra(tier)
    if days >= ladder.cancelled_days + extra:
        return "cancelled"
    if days >= ladder.blocked_days + extra:
        return "blocked"
    if days >= ladder.warning_days + extra:
        return "warning"
    if retrying:
        return "retrying"
    if now > due_at and days >= 1:
        return "overdue"
    return None


def next_dunning_state(
    *,
    current: str | None,
    taken_over: bool,
    now: datetime,
    due_at: datetime,
    grace_until: datetime | None,
    retrying: bool,
    tier: str | None,
    ladder: Ladder,
) -> str | None:
    """The state an open case moves to now, or None when it stays where it is: a human who has
    taken the client over holds every move, and ``cancelled`` is only left by a payment."""
    if taken_over:
        return None  # a human is talking to the client: reminders wait
    new = dunning_state(now=now, due_at=due_at, grace_until=grace_until, retrying=retrying, tier=tier, ladder=ladder)
    if new is None or new == current or current == "cancelled":
        return None
    return new


def days_overdue(*, due_at: datetime, now: datetime) -> int:
    return max((now - due_at).days, 0)


def worst_state(states: Iterable[str | None]) -> str | None:
    """What a subscription shows: the worst state of its unpaid invoices (None when none is bad)."""
    worst = max(states, key=lambda s: SEVERITY.get(s, 0), default=None)
    return worst if SEVERITY.get(worst, 0) else None


def service_blocked(state: str | None) -> bool:
    """Dunning reached ``blocked`` (or beyond): hold the client's work."""
    return SEVERITY.get(state, 0) >= SEVERITY["blocked"]


def dunning_reason(
    state: str,
    *,
    decline_code: str | None,
    grace_until: datetime | None,
    retries_done: int,
    next_retry_at: datetime | None,
    days_late: int,
    hard_declined: bool,
) -> str:
    """Why a case moved, as ``dunning.state_changed`` tells it."""
    if state == "grace":
        return f"card declined ({decline_code}); service kept until {grace_until:%Y-%m-%d}"
    if state == "retrying":
        return f"card declined ({decline_code}); retry {retries_done + 1} on {next_retry_at:%Y-%m-%d}"
    return f"{days_late} days overdue" + (" after a hard decline" if hard_declined else "")

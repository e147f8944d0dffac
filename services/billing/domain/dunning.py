"""When dunning chases, holds and blocks a client: the one place that answers it.

The ladder (Kill Bill's overdue ladder, Stripe's smart-retry defaults) counts whole days
past the due date, or past the end of a grace period an expired card started:

- ``retrying``: a soft card decline, retried 1, 3, 5 and 7 days after the first failure;
- ``grace``: an expired card; service is kept until the grace period ends (14 days);
- ``overdue`` from 1 day, ``warning`` (the final notice) from 10, ``blocked`` from 14 (the
  client's work is held: ``service_blocked``), ``cancelled`` from 21 (the subscription ends,
  ``non_payment``);
- each tier has its ladder (``Ladder.for_tier``; no tier or an unknown one: ``good``'s, the
  numbers above): ``best`` gets 7 more days at every step and in grace; ``tolerable`` fewer
  (warning 7, blocked 10, cancelled 14, grace 7); ``fire`` no expired-card grace, and a case
  goes straight to ``warning`` (the final notice), blocked from 7, cancelled from 14;
- while a human has taken the client over, no state moves (card retries go on);
- ``cancelled`` is the end of the ladder: only a payment (``clear``) ends it.

The numbers are the ``Ladder`` policy; billing's settings read it from the environment
(``BILLING_WARNING_DAYS``..., a tier's overrides from ``BILLING_DUNNING_TIERS``), so a
deployment may move a step without touching these rules. A ladder whose steps are out of order
is refused when the settings are read (at start-up), naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from shared.events import Tier

TIERS: tuple[str, ...] = get_args(Tier)
DEFAULT_TIER = "good"

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


class LadderOverrides(BaseModel):
    """One tier's changes to the ladder: a field left out (or null) is ``good``'s (the flat
    ``BILLING_*_DAYS`` values); ``extra_days`` is added to every step and to the grace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warning_days: int | None = Field(default=None, ge=0, description="days to `warning`, the final notice")
    blocked_days: int | None = Field(default=None, ge=0)
    cancelled_days: int | None = Field(default=None, ge=0)
    retry_schedule_days: tuple[int, ...] | None = Field(default=None, description="days after the first failure")
    grace_days: int | None = Field(default=None, ge=0, description="0: an expired card starts no grace")
    extra_days: int | None = Field(
        default=None, ge=0, description="added to every step and to the grace; `best`: BILLING_BEST_EXTRA_DAYS"
    )
    final_notice_at_once: bool | None = Field(
        default=None, description="a case starts at `warning` (the final notice): on the first failure or day late"
    )


# Today's ladders: `best` takes `best_extra_days` (BILLING_BEST_EXTRA_DAYS), `good` the flat values.
DEFAULT_TIER_OVERRIDES: dict[str, dict[str, Any]] = {
    "best": {},
    "good": {},
    "tolerable": {"warning_days": 7, "blocked_days": 10, "cancelled_days": 14, "grace_days": 7},
    "fire": {"warning_days": 0, "blocked_days": 7, "cancelled_days": 14, "grace_days": 0, "final_notice_at_once": True},
}


class TierLadder(BaseModel):
    """The ladder one tier's cases climb, every number resolved (``Ladder.for_tier``)."""

    model_config = ConfigDict(frozen=True)

    warning_days: int
    blocked_days: int
    cancelled_days: int
    retry_schedule_days: tuple[int, ...]
    grace_days: int
    final_notice_at_once: bool = False


def _out_of_order(ladder: TierLadder) -> str | None:
    """Why the steps are out of order, naming the field; None when they are in order."""
    retries = ladder.retry_schedule_days
    if any(d < 0 for d in retries) or any(b <= a for a, b in pairwise(retries)):
        return f"retry_schedule_days must be days after the first failure, rising: got {list(retries)}"
    if ladder.blocked_days < ladder.warning_days:
        return f"blocked_days ({ladder.blocked_days}) comes before warning_days ({ladder.warning_days})"
    if ladder.cancelled_days < ladder.blocked_days:
        return f"cancelled_days ({ladder.cancelled_days}) comes before blocked_days ({ladder.blocked_days})"
    return None


class Ladder(BaseModel):
    """Kill Bill style overdue ladder, in days past due (or past the grace period's end), with
    the retry schedule and the declines that are never retried or start a grace period.

    The flat numbers are ``good``'s ladder; ``tiers`` holds each tier's overrides of them,
    merged field by field over ``DEFAULT_TIER_OVERRIDES`` (so ``{"fire": {"cancelled_days":
    30}}`` keeps fire's other numbers)."""

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
    tiers: dict[str, LadderOverrides] = Field(
        default_factory=lambda: {t: LadderOverrides(**o) for t, o in DEFAULT_TIER_OVERRIDES.items()},
        description="each tier's overrides of the ladder, merged over the defaults field by field",
    )

    @field_validator("tiers", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # pydantic says what is wrong with it
        merged: dict[Any, Any] = {t: dict(o) for t, o in DEFAULT_TIER_OVERRIDES.items()}
        for tier, given in value.items():
            if tier not in TIERS:
                raise ValueError(f"unknown tier {tier!r} (tiers are {', '.join(TIERS)})")
            fields = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else given
            merged[tier] = {**merged.get(tier, {}), **fields} if isinstance(fields, Mapping) else fields
        return merged

    # Resolved once (the ladder is frozen): the dunning pass asks for one per case.
    _ladders: dict[str, TierLadder] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _in_order(self) -> Ladder:
        # `good` first: its numbers are the flat fields, named as such when they are wrong.
        for tier in sorted(TIERS, key=lambda t: t != DEFAULT_TIER):
            ladder = self._resolve(tier)
            problem = _out_of_order(ladder)
            if problem:
                where = "" if tier == DEFAULT_TIER else f"tiers.{tier}: "
                raise ValueError(f"dunning ladder out of order: {where}{problem}")
            self._ladders[tier] = ladder
        return self

    def for_tier(self, tier: str | None) -> TierLadder:
        """The ladder a client of this tier climbs (no tier, or one billing does not know:
        ``good``'s)."""
        return self._ladders[tier if tier in TIERS else DEFAULT_TIER]

    def _resolve(self, tier: str) -> TierLadder:
        o = self.tiers.get(tier) or LadderOverrides()
        extra = o.extra_days if o.extra_days is not None else (self.best_extra_days if tier == "best" else 0)

        def days(own: int | None, flat: int) -> int:
            return (flat if own is None else own) + extra

        return TierLadder(
            warning_days=days(o.warning_days, self.warning_days),
            blocked_days=days(o.blocked_days, self.blocked_days),
            cancelled_days=days(o.cancelled_days, self.cancelled_days),
            retry_schedule_days=self.retry_schedule_days if o.retry_schedule_days is None else o.retry_schedule_days,
            grace_days=days(o.grace_days, self.grace_days) if (o.grace_days is None or o.grace_days) else 0,
            final_notice_at_once=bool(o.final_notice_at_once),
        )

    def grace_until(self, *, declined_at: datetime, tier: str | None) -> datetime | None:
        """The end of the grace an expired card starts (service is kept until then); None when
        the client's tier gets no grace (``grace_days`` 0)."""
        grace = self.for_tier(tier).grace_days
        return declined_at + timedelta(days=grace) if grace else None


def classify_decline(code: str | None, *, hard_codes: frozenset[str], grace_codes: frozenset[str]) -> str:
    """``hard`` (never retried: stolen card, closed account), ``grace`` (expired card: the
    client must update it; service kept meanwhile) or ``soft`` (retried on the schedule)."""
    if code in grace_codes:
        return "grace"
    if code in hard_codes:
        return "hard"
    return "soft"


def next_retry_at(
    *, first_failed_at: datetime, retries_done: int, ladder: Ladder, tier: str | None = None
) -> datetime | None:
    """When the next retry is due, counted from the first failure (1, 3, 5, 7 days after it
    by default, as Stripe's and Kill Bill's examples); None when the schedule is used up."""
    schedule = ladder.for_tier(tier).retry_schedule_days
    if retries_done >= len(schedule):
        return None
    return first_failed_at + timedelta(days=schedule[retries_done])


def retry_after_decline(
    *,
    kind: str,
    hard_declined: bool,
    first_failed_at: datetime,
    retries_done: int,
    ladder: Ladder,
    tier: str | None = None,
) -> datetime | None:
    """When a declined card is tried again: never after a hard decline (the client must act),
    nor after an expired card (they must update it; with or without a grace), else on the
    schedule."""
    if hard_declined or kind == "grace":
        return None
    return next_retry_at(first_failed_at=first_failed_at, retries_done=retries_done, ladder=ladder, tier=tier)


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
    failed: bool = False,
) -> str | None:
    """Where an unpaid invoice stands, on its tier's ladder. The ladder counts from the due
    date, or from the end of a grace period (an expired card keeps service until then).
    None: nothing to chase. ``failed``: a card failed on it (a tier whose case starts at the
    final notice starts there then, even before the due date)."""
    steps = ladder.for_tier(tier)
    if grace_until is not None and now < grace_until:
        return "grace"
    start = max(due_at, grace_until) if grace_until is not None else due_at
    days = (now - start).days if now > start else -1
    if days >= steps.cancelled_days:
        return "cancelled"
    if days >= steps.blocked_days:
        return "blocked"
    if days >= steps.warning_days:
        return "warning"
    late = now > due_at and days >= 1
    if steps.final_notice_at_once and (retrying or failed or late):
        return "warning"
    if retrying:
        return "retrying"
    if late:
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
    failed: bool = False,
) -> str | None:
    """The state an open case moves to now, or None when it stays where it is: a human who has
    taken the client over holds every move, and ``cancelled`` is only left by a payment."""
    if taken_over:
        return None  # a human is talking to the client: reminders wait
    new = dunning_state(
        now=now, due_at=due_at, grace_until=grace_until, retrying=retrying, tier=tier, ladder=ladder, failed=failed
    )
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

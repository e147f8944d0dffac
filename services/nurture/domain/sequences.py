"""Sequences as data: a sequence, its steps and re-entry rule, the catalog of every sequence,
when each step is due, and which enrollments an event starts or ends.

Pure: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Category = Literal["marketing", "transactional"]
CATEGORIES: tuple[str, ...] = ("marketing", "transactional")

# Statuses of a scheduled step (a row of ``scheduled_messages``).
PENDING, SENT, SUPPRESSED, CANCELLED, SKIPPED, FAILED = (
    "pending",
    "sent",
    "suppressed",
    "cancelled",
    "skipped",
    "failed",
)


# Who a sequence is for: conditions on these fields of the person (``when:`` in YAML).
SEGMENT_FIELDS: tuple[str, ...] = ("stage", "tier", "industry", "language", "channel", "segment")

# Exit conditions by their plain names (``exit_on: [reply, unsubscribe]``); event types work too.
# ``reply`` is not an event of the contract: it is an inbound email recorded by nurture itself.
REPLY = "reply"
EXIT_ALIASES: dict[str, str] = {
    "reply": REPLY,
    "unsubscribe": "lead.unsubscribed",
    "bounce": "email.bounced",
    "deal_won": "deal.won",
    "deal_lost": "deal.lost",
    "takeover": "takeover.started",
    "erasure": "lead.erased",
    "paid": "payment.succeeded",
}

# Step conditions, read against the last email this enrollment sent.
CONDITIONS: tuple[str, ...] = ("not_opened_previous", "opened_previous", "not_clicked_previous", "clicked_previous")


class SequenceError(ValueError):
    """A sequence definition that cannot be used (the message says which field and why)."""


@dataclass(frozen=True)
class Step:
    """One email of a sequence. Due ``delay`` after the previous step (after enrollment for the
    first), or, with ``before``, that long before the sequence's anchor time."""

    number: int
    template: str
    delay: timedelta
    category: Category
    before: timedelta | None = None
    condition: str | None = None

    @property
    def immediate(self) -> bool:
        """The instant answer to what the person just did (a welcome): not held by quiet hours."""
        return self.number == 0 and self.delay == timedelta(0) and self.before is None


@dataclass(frozen=True)
class Reentry:
    """May a person enter a sequence again? ``never`` (once ever), ``per`` (once per value of a
    trigger field, e.g. each invoice), ``after`` (once the last enrollment ended that long ago),
    ``always`` (every trigger, while none is active)."""

    mode: Literal["never", "per", "after", "always"] = "never"
    per: str | None = None
    after: timedelta | None = None


@dataclass(frozen=True)
class Sequence:
    """A named series of emails started by one event type and ended early by others."""

    name: str
    trigger: str
    steps: tuple[Step, ...]
    exit_on: frozenset[str] = frozenset()
    segments: frozenset[str] | None = None
    description: str = ""
    when: Mapping[str, frozenset[str]] = field(default_factory=dict)
    category: Category = "marketing"
    reentry: Reentry = Reentry()
    anchor: str | None = None
    then: str | None = None
    # Conditions on the trigger's payload (field -> allowed values): ``match: {to_state: [warning]}``.
    match: Mapping[str, frozenset[str]] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def applies_to(self, segment: str | None = None, profile: Mapping[str, Any] | None = None) -> bool:
        """Whether a person with this segment (and profile: stage, tier, ...) is one it is for."""
        values = dict(profile or {})
        if segment is not None:
            values.setdefault("segment", segment)
        if self.segments is not None and values.get("segment") not in self.segments:
            return False
        for name, allowed in self.when.items():
            value = values.get(name)
            if value is None or str(value).lower() not in allowed:
                return False
        return True

    def matches(self, data: Mapping[str, Any] | None) -> bool:
        """Whether the trigger's payload meets the sequence's ``match`` conditions."""
        values = data or {}
        return all(str(values.get(name, "")).lower() in allowed for name, allowed in self.match.items())

    @property
    def marketing(self) -> bool:
        return any(step.category == "marketing" for step in self.steps)

    def schedule(self, enrolled_at: datetime, anchor_at: datetime | None = None) -> list[tuple[Step, datetime | None]]:
        """Every step with the moment it is due; delays add up, step after step. A ``before``
        step is due that long before ``anchor_at``; one already past is sent at enrollment, unless
        a later ``before`` step is past too (then it is superseded, due ``None``): a notice 30
        days ahead makes no sense when 7 are left."""
        due = enrolled_at
        planned: list[tuple[Step, datetime | None]] = []
        for step in self.steps:
            if step.before is not None and anchor_at is not None:
                planned.append((step, anchor_at - step.before))
            else:
                due = due + step.delay
                planned.append((step, due))
        result: list[tuple[Step, datetime | None]] = []
        for index, (step, moment) in enumerate(planned):
            if step.before is not None and moment is not None and moment < enrolled_at:
                later_past = any(
                    s.before is not None and m is not None and m <= enrolled_at for s, m in planned[index + 1 :]
                )
                if later_past or (anchor_at is not None and anchor_at <= enrolled_at):
                    result.append((step, None))
                    continue
                moment = enrolled_at
            result.append((step, moment))
        return result

    def anchor_in(self, data: Mapping[str, Any]) -> datetime | None:
        """The anchor time the trigger's payload carries (RFC 3339), for 'before' steps."""
        if self.anchor is None or not data.get(self.anchor):
            return None
        return datetime.fromisoformat(str(data[self.anchor]).replace("Z", "+00:00"))

    def key_for(self, data: Mapping[str, Any], *, now: datetime) -> str:
        """What makes an enrollment unique for the re-entry rule."""
        if self.reentry.mode == "per":
            return "|".join(str(data.get(one) or "") for one in (self.reentry.per or "").split(","))
        if self.reentry.mode in ("after", "always"):
            return now.isoformat()
        return ""


@dataclass(frozen=True)
class PastEnrollment:
    key: str
    active: bool
    ended_at: datetime | None


def may_enroll(sequence: Sequence, previous: Iterable[PastEnrollment], *, key: str, now: datetime) -> bool:
    """The explicit re-entry rule of ``sequence`` applied to the person's earlier enrollments."""
    past = list(previous)
    rule = sequence.reentry
    if rule.mode == "never":
        return not past
    if rule.mode == "per":
        return bool(key) and all(p.key != key for p in past)
    if any(p.active for p in past):
        return False
    if rule.mode == "after" and rule.after is not None:
        return all(p.ended_at is not None and now - p.ended_at >= rule.after for p in past)
    return True


@dataclass(frozen=True)
class PlannedStep:
    """A step as enrollment writes it: due at ``due_at``, pending, or skipped when a later
    'before' step supersedes it; ``variables`` are what its template sees beyond the payload."""

    step: Step
    due_at: datetime
    status: str
    reason: str | None
    variables: dict[str, Any] | None


def plan_steps(sequence: Sequence, *, enrolled_at: datetime, data: Mapping[str, Any]) -> list[PlannedStep]:
    """Every step of an enrollment made at ``enrolled_at`` by a trigger carrying ``data``."""
    planned = []
    for step, due_at in sequence.schedule(enrolled_at, sequence.anchor_in(data)):
        variables: dict[str, Any] = {}
        if step.before is not None:
            variables["days_before"] = step.before.days
        planned.append(
            PlannedStep(
                step=step,
                due_at=due_at or enrolled_at,
                status=PENDING if due_at is not None else SKIPPED,
                reason=None if due_at is not None else "superseded",
                variables=variables or None,
            )
        )
    return planned


def exit_ends(sequence: Sequence | None, *, key: str, event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether ``event_type`` ends an active enrollment in ``sequence`` whose key is ``key``: it
    is one of the sequence's exits and, with ``reentry: {per: field}``, it carries that
    enrollment's key or none (a payment ends the reminders of its own invoice, not of the others)."""
    if sequence is None or event_type not in sequence.exit_on:
        return False
    per = sequence.reentry.per if sequence.reentry.mode == "per" else None
    if not per:
        return True
    # Each field the exit carries must be the enrollment's own (a payment of another invoice
    # ends nothing here); fields it does not carry match any.
    return all(
        data.get(one) is None or str(data[one]) == part
        for one, part in zip(per.split(","), key.split("|"), strict=False)
    )


# An exit that stops even the immediate answer to what the person did (a welcome): a bounce, an
# erasure, an unsubscribe. Any other exit arriving with the trigger (a lead captured and won in
# one batch after a broker outage) spares it; consent and takeover are checked at send anyway.
STOPS_IMMEDIATE: frozenset[str] = frozenset({"email.bounced", "lead.erased", "lead.unsubscribed"})


def spares_immediate(event_type: str) -> bool:
    """Whether ending enrollments on ``event_type`` leaves their immediate steps to go."""
    return event_type not in STOPS_IMMEDIATE


def ended_by_unsubscribe(sequence: Sequence | None) -> bool:
    """An unsubscribe ends every marketing sequence (and one no longer known), whatever its
    ``exit_on`` says, and any sequence that lists it."""
    return sequence is None or sequence.marketing or "lead.unsubscribed" in sequence.exit_on


def profile_of(
    *,
    stage: str | None,
    tier: str | None,
    industry: str | None,
    language: str | None,
    channel: str | None,
    segment: str | None,
) -> dict[str, Any]:
    """The person as segment conditions (``when:``) read them: the language without its region."""
    return {
        "stage": stage,
        "tier": tier,
        "industry": industry,
        "language": (language or "en").split("-")[0],
        "channel": channel,
        "segment": segment,
    }


@dataclass(frozen=True)
class Catalog:
    """Every sequence the service knows, by name."""

    sequences: Mapping[str, Sequence]

    @classmethod
    def of(cls, sequences: Iterable[Sequence]) -> Catalog:
        by_name: dict[str, Sequence] = {}
        for sequence in sequences:
            if sequence.name in by_name:
                raise SequenceError(f"two sequences are named {sequence.name!r}")
            by_name[sequence.name] = sequence
        catalog = cls(by_name)
        catalog.check_links()
        return catalog

    def check_links(self) -> None:
        """``then`` names a known sequence and never leads back (a person would loop forever)."""
        for sequence in self.sequences.values():
            seen = [sequence.name]
            current = sequence
            while current.then is not None:
                if current.then not in self.sequences:
                    raise SequenceError(f"{current.name}: then {current.then!r} is not a known sequence")
                if current.then in seen:
                    raise SequenceError(f"cycle: {' -> '.join([*seen, current.then])}")
                seen.append(current.then)
                current = self.sequences[current.then]

    def replaced(self, sequence: Sequence) -> Catalog:
        """This catalog with ``sequence`` added or replacing the one of its name (validated)."""
        return Catalog.of([*(s for s in self.sequences.values() if s.name != sequence.name), sequence])

    def triggered_by(
        self,
        event_type: str,
        *,
        segment: str | None = None,
        profile: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> list[Sequence]:
        """Sequences a person (segment, profile) is enrolled in when ``event_type`` happens
        (with ``data``, its payload: the sequence's ``match`` conditions must hold)."""
        return [
            s
            for s in self.sequences.values()
            if s.trigger == event_type and s.applies_to(segment, profile) and (data is None or s.matches(data))
        ]

    def ended_by(self, event_type: str) -> list[Sequence]:
        return [s for s in self.sequences.values() if event_type in s.exit_on]

    def exit_events(self) -> set[str]:
        return {event_type for s in self.sequences.values() for event_type in s.exit_on}

    def templates(self) -> set[str]:
        return {step.template for s in self.sequences.values() for step in s.steps}

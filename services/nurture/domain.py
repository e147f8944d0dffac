"""Pure rules of nurturing: sequences as data, when each step is due, who may be emailed, which
template language to use, and the signed unsubscribe token.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

Category = Literal["marketing", "transactional"]
CATEGORIES: tuple[str, ...] = ("marketing", "transactional")

# Statuses of a scheduled step (a row of ``scheduled_messages``).
PENDING, SENT, SUPPRESSED, CANCELLED = "pending", "sent", "suppressed", "cancelled"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DELAY = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SequenceError(ValueError):
    """A sequence definition that cannot be used (the message says which field and why)."""


@dataclass(frozen=True)
class Step:
    """One email of a sequence; ``delay`` counts from the previous step (from enrollment for 0)."""

    number: int
    template: str
    delay: timedelta
    category: Category


@dataclass(frozen=True)
class Sequence:
    """A named series of emails started by one event type and ended early by others."""

    name: str
    trigger: str
    steps: tuple[Step, ...]
    exit_on: frozenset[str] = frozenset()
    segments: frozenset[str] | None = None
    description: str = ""

    def applies_to(self, segment: str) -> bool:
        return self.segments is None or segment in self.segments

    def schedule(self, enrolled_at: datetime) -> list[tuple[Step, datetime]]:
        """Every step with the moment it is due; delays add up, step after step."""
        due = enrolled_at
        planned = []
        for step in self.steps:
            due = due + step.delay
            planned.append((step, due))
        return planned


def parse_delay(value: Any) -> timedelta:
    """``0``, ``90`` (seconds), ``"45s"``, ``"30m"``, ``"12h"``, ``"3d"`` or ``"2w"``."""
    if isinstance(value, bool):
        raise SequenceError(f"delay {value!r}: use a number of seconds or a string like '3d'")
    if isinstance(value, int):
        if value < 0:
            raise SequenceError(f"delay {value!r} is negative")
        return timedelta(seconds=value)
    match = _DELAY.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise SequenceError(f"delay {value!r}: use a number with an optional unit s, m, h, d or w, e.g. '3d'")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def sequence_from_dict(data: Mapping[str, Any], *, known_events: Iterable[str]) -> Sequence:
    """Validate one sequence definition (as read from YAML) against the event contract."""
    if not isinstance(data, Mapping):
        raise SequenceError("a sequence is a mapping with name, trigger and steps")
    known = set(known_events)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SequenceError(f"name {name!r}: lower case letters, digits and _ only")
    trigger = data.get("trigger")
    if trigger not in known:
        raise SequenceError(f"{name}: trigger {trigger!r} is not an event type of the contract")
    default_category = data.get("category", "marketing")
    if default_category not in CATEGORIES:
        raise SequenceError(f"{name}: category {default_category!r} is not one of {', '.join(CATEGORIES)}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise SequenceError(f"{name}: needs at least one step")
    steps = []
    for number, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise SequenceError(f"{name} step {number}: a step is a mapping with template and delay")
        template = raw.get("template")
        if not isinstance(template, str) or not _NAME.match(template):
            raise SequenceError(f"{name} step {number}: template {template!r}: lower case letters, digits and _ only")
        category = raw.get("category", default_category)
        if category not in CATEGORIES:
            raise SequenceError(f"{name} step {number}: category {category!r} is not one of {', '.join(CATEGORIES)}")
        try:
            delay = parse_delay(raw.get("delay", 0))
        except SequenceError as exc:
            raise SequenceError(f"{name} step {number}: {exc}") from None
        steps.append(Step(number=number, template=template, delay=delay, category=category))
    exit_on = data.get("exit_on") or []
    if not isinstance(exit_on, list) or any(e not in known for e in exit_on):
        raise SequenceError(f"{name}: exit_on must list event types of the contract, got {exit_on!r}")
    if trigger in exit_on:
        raise SequenceError(f"{name}: {trigger} cannot both start and end the sequence")
    segments = data.get("segments")
    if segments is not None and (not isinstance(segments, list) or not all(isinstance(s, str) for s in segments)):
        raise SequenceError(f"{name}: segments must be a list of names, got {segments!r}")
    return Sequence(
        name=name,
        trigger=trigger,
        steps=tuple(steps),
        exit_on=frozenset(exit_on),
        segments=frozenset(segments) if segments is not None else None,
        description=str(data.get("description") or ""),
    )


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
        return cls(by_name)

    def triggered_by(self, event_type: str, *, segment: str) -> list[Sequence]:
        """Sequences a person in ``segment`` is enrolled in when ``event_type`` happens."""
        return [s for s in self.sequences.values() if s.trigger == event_type and s.applies_to(segment)]

    def ended_by(self, event_type: str) -> list[Sequence]:
        return [s for s in self.sequences.values() if event_type in s.exit_on]

    def exit_events(self) -> set[str]:
        return {event_type for s in self.sequences.values() for event_type in s.exit_on}

    def templates(self) -> set[str]:
        return {step.template for s in self.sequences.values() for step in s.steps}


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class PendingStep:
    """What the sender needs to know about a scheduled step to decide whether it goes now."""

    id: uuid.UUID
    lead_id: uuid.UUID
    due_at: datetime


def select_due(
    pending: Iterable[PendingStep], *, now: datetime, held: set[uuid.UUID], limit: int
) -> list[PendingStep]:
    """Steps due at ``now``, oldest first; a person under a human takeover is held (their steps
    stay pending and go out after the release)."""
    due = [p for p in pending if p.due_at <= now and p.lead_id not in held]
    return sorted(due, key=lambda p: (p.due_at, str(p.id)))[:limit]


@dataclass(frozen=True)
class Delivery:
    send: bool
    reason: str | None = None  # why not, when ``send`` is False


def delivery(*, category: str, consent_marketing: bool, address: str | None, erased: bool) -> Delivery:
    """Whether an email may go: marketing needs consent; nobody is emailed without an address."""
    if erased or not address:
        return Delivery(False, "no_address")
    if category == "marketing" and not consent_marketing:
        return Delivery(False, "no_consent")
    return Delivery(True)


def merged_consent(current: bool, incoming: bool) -> bool:
    """A later form that ticks consent grants it; one that leaves the box empty does not take
    back a consent given earlier (only an unsubscribe does)."""
    return current or incoming


def template_candidates(template: str, language: str | None, *, fallback: str = "en") -> list[str]:
    """Template bases to try, best first: the person's language (``fa-IR`` reads as ``fa``),
    then the fallback language."""
    primary = (language or "").strip().lower().replace("_", "-").split("-")[0]
    names = [f"{template}.{primary}"] if primary and primary != fallback else []
    return [*names, f"{template}.{fallback}"]


def first_name(name: str | None) -> str:
    return (name or "").strip().split(" ")[0] if name and name.strip() else ""


# --------------------------------------------------------------------------- unsubscribe links


def unsubscribe_token(secret: str, lead_id: uuid.UUID) -> str:
    """A public, unguessable token naming the person: ``<lead_id hex>.<HMAC-SHA256, base64url>``."""
    mac = hmac.new(secret.encode(), f"unsubscribe:{lead_id}".encode(), hashlib.sha256).digest()
    return f"{lead_id.hex}.{base64.urlsafe_b64encode(mac[:18]).decode().rstrip('=')}"


def verify_unsubscribe_token(secret: str, token: str) -> uuid.UUID | None:
    """The person a token names, or None when it was not signed with ``secret``."""
    try:
        raw_id, _ = token.split(".", 1)
        lead_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    return lead_id if hmac.compare_digest(unsubscribe_token(secret, lead_id), token) else None

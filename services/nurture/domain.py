"""Pure rules of nurturing: sequences as data, when each step is due, who may be emailed and
when (consent, frequency cap, quiet hours), which template language to use, signed links,
engagement and sales readiness, complaints.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

Category = Literal["marketing", "transactional"]
CATEGORIES: tuple[str, ...] = ("marketing", "transactional")

# Statuses of a scheduled step (a row of ``scheduled_messages``).
PENDING, SENT, SUPPRESSED, CANCELLED, SKIPPED, FAILED = (
    "pending", "sent", "suppressed", "cancelled", "skipped", "failed"
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DELAY = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

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

    def key_for(self, data: Mapping[str, Any], *, now: datetime) -> str:
        """What makes an enrollment unique for the re-entry rule."""
        if self.reentry.mode == "per":
            return str(data.get(self.reentry.per or "") or "")
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


def _exit_reason(name: Any, known: set[str]) -> str:
    if isinstance(name, str) and name in EXIT_ALIASES:
        return EXIT_ALIASES[name]
    if isinstance(name, str) and name in known:
        return name
    raise SequenceError(f"exit_on {name!r}: use an event type of the contract or one of {', '.join(EXIT_ALIASES)}")


def _reentry(raw: Any, name: str, fields: set[str] | None) -> Reentry:
    if raw is None or raw == "never":
        return Reentry()
    if raw == "always":
        return Reentry("always")
    if isinstance(raw, Mapping) and len(raw) == 1 and "per" in raw:
        per = raw["per"]
        if not isinstance(per, str) or (fields is not None and per not in fields):
            raise SequenceError(f"{name}: reentry per {per!r} is not a field of the trigger's payload")
        return Reentry("per", per=per)
    if isinstance(raw, Mapping) and len(raw) == 1 and "after" in raw:
        try:
            return Reentry("after", after=parse_delay(raw["after"]))
        except SequenceError as exc:
            raise SequenceError(f"{name}: reentry after: {exc}") from None
    raise SequenceError(f"{name}: reentry {raw!r}: use never, always, {{per: <field>}} or {{after: <delay>}}")


def sequence_from_dict(
    data: Mapping[str, Any],
    *,
    known_events: Iterable[str],
    triggers: Iterable[str] | None = None,
    payload_fields: Mapping[str, set[str]] | None = None,
) -> Sequence:
    """Validate one sequence definition (as read from YAML or JSON) against the event contract.

    ``triggers`` limits the trigger to the event types the service reacts to; ``payload_fields``
    (event type -> field names) lets the anchor and re-entry fields be checked."""
    if not isinstance(data, Mapping):
        raise SequenceError("a sequence is a mapping with name, trigger and steps")
    known = set(known_events)
    allowed_triggers = set(triggers) if triggers is not None else known
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SequenceError(f"name {name!r}: lower case letters, digits and _ only")
    trigger = data.get("trigger")
    if trigger not in allowed_triggers:
        raise SequenceError(f"{name}: trigger {trigger!r} is not an event type of the contract nurture reacts to")
    fields = payload_fields.get(trigger) if payload_fields is not None else None
    default_category = data.get("category", "marketing")
    if default_category not in CATEGORIES:
        raise SequenceError(f"{name}: category {default_category!r} is not one of {', '.join(CATEGORIES)}")
    anchor = data.get("anchor")
    if anchor is not None and (not isinstance(anchor, str) or (fields is not None and anchor not in fields)):
        raise SequenceError(f"{name}: anchor {anchor!r} is not a time field of the trigger's payload")
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
            before = parse_delay(raw["before"]) if raw.get("before") is not None else None
        except SequenceError as exc:
            raise SequenceError(f"{name} step {number}: {exc}") from None
        if before is not None and anchor is None:
            raise SequenceError(f"{name} step {number}: 'before' needs the sequence's anchor (a time of the trigger)")
        condition = raw.get("if")
        if condition is not None and condition not in CONDITIONS:
            raise SequenceError(f"{name} step {number}: condition {condition!r} is not one of {', '.join(CONDITIONS)}")
        if condition is not None and number == 0:
            raise SequenceError(f"{name} step 0: condition {condition!r} needs a previous step")
        steps.append(
            Step(number=number, template=template, delay=delay, category=category, before=before, condition=condition)
        )
    exit_on = data.get("exit_on") or []
    if not isinstance(exit_on, list):
        raise SequenceError(f"{name}: exit_on must list event types of the contract, got {exit_on!r}")
    try:
        exits = frozenset(_exit_reason(e, known) for e in exit_on)
    except SequenceError as exc:
        raise SequenceError(f"{name}: {exc}") from None
    if trigger in exits:
        raise SequenceError(f"{name}: {trigger} cannot both start and end the sequence")
    segments = data.get("segments")
    if segments is not None and (not isinstance(segments, list) or not all(isinstance(s, str) for s in segments)):
        raise SequenceError(f"{name}: segments must be a list of names, got {segments!r}")
    when_raw = data.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise SequenceError(f"{name}: when must map {', '.join(SEGMENT_FIELDS)} to a value or a list")
    when: dict[str, frozenset[str]] = {}
    for key, value in when_raw.items():
        if key not in SEGMENT_FIELDS:
            raise SequenceError(f"{name}: when {key!r} is not one of {', '.join(SEGMENT_FIELDS)}")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            raise SequenceError(f"{name}: when {key} must be a name or a list of names")
        when[key] = frozenset(v.lower() for v in values)
    then = data.get("then")
    if then is not None and (not isinstance(then, str) or not _NAME.match(then)):
        raise SequenceError(f"{name}: then {then!r} must name a sequence")
    if then == name:
        raise SequenceError(f"{name}: then {then!r} is a cycle (the sequence would follow itself)")
    return Sequence(
        name=name,
        trigger=trigger,
        steps=tuple(steps),
        exit_on=exits,
        segments=frozenset(segments) if segments is not None else None,
        description=str(data.get("description") or ""),
        when=when,
        category=default_category,
        reentry=_reentry(data.get("reentry"), name, fields),
        anchor=anchor,
        then=then,
        source=dict(data),
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
        self, event_type: str, *, segment: str | None = None, profile: Mapping[str, Any] | None = None
    ) -> list[Sequence]:
        """Sequences a person (segment, profile) is enrolled in when ``event_type`` happens."""
        return [
            s for s in self.sequences.values() if s.trigger == event_type and s.applies_to(segment, profile)
        ]

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


def delivery(
    *, category: str, consent_marketing: bool, address: str | None, erased: bool, bounced: bool = False
) -> Delivery:
    """Whether an email may go: marketing needs consent; nobody is emailed without an address,
    nor at an address that bounced hard."""
    if erased or not address:
        return Delivery(False, "no_address")
    if bounced:
        return Delivery(False, "bounced")
    if category == "marketing" and not consent_marketing:
        return Delivery(False, "no_consent")
    return Delivery(True)


def merged_consent(current: bool, incoming: bool) -> bool:
    """A later form that ticks consent grants it; one that leaves the box empty does not take
    back a consent given earlier (only an unsubscribe does)."""
    return current or incoming


@dataclass(frozen=True)
class QuietHours:
    """Local hours no scheduled email is sent in, e.g. 21 to 8; ``start == end`` turns it off."""

    start: int = 21
    end: int = 8

    @property
    def off(self) -> bool:
        return self.start == self.end


UTC = ZoneInfo("UTC")
# The longest IANA key is about 30 characters: a longer one names no zone, and is not worth a
# file lookup (100,000 characters made ZoneInfo raise OSError 36, "file name too long").
_ZONE_KEY_MAX = 64


@lru_cache(maxsize=1024)
def _read_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfo raises more than ZoneInfoNotFoundError and ValueError:
        # IsADirectoryError for "America", OSError for a name too long, ValueError for "../x"...
        return None


def known_zone(name: str | None) -> bool:
    """Whether ``name`` is a time zone ZoneInfo can read (no name is UTC, and known)."""
    if not name:
        return True
    return isinstance(name, str) and len(name) <= _ZONE_KEY_MAX and _read_zone(name) is not None


def zone(name: str | None) -> ZoneInfo:
    """The person's time zone, total: any key ZoneInfo cannot read is UTC, so one odd value (an
    old event, a row stored before capture validated it) never stops sending. Callers report
    the fallback (``known_zone``)."""
    if not known_zone(name):
        return UTC
    return _read_zone(name) if name else UTC  # type: ignore[return-value]


def quiet_until(now: datetime, *, timezone_name: str | None, quiet: QuietHours) -> datetime | None:
    """When the quiet hours the person is in now end (UTC), or None when it is not quiet there."""
    if quiet.off:
        return None
    local = now.astimezone(zone(timezone_name))
    hour = local.hour
    inside = (quiet.start <= hour or hour < quiet.end) if quiet.start > quiet.end else quiet.start <= hour < quiet.end
    if not inside:
        return None
    end_day = local.date() if hour < quiet.end else local.date() + timedelta(days=1)
    end = datetime.combine(end_day, time(quiet.end), tzinfo=local.tzinfo)
    return end.astimezone(now.tzinfo)


CAP_WINDOW = timedelta(days=7)


def cap_until(now: datetime, recent_marketing: Iterable[datetime], *, cap: int) -> datetime | None:
    """With ``cap`` marketing emails already in the last 7 days, when the next may go (the
    oldest of them leaves the window); None when under the cap."""
    window = sorted(t for t in recent_marketing if now - CAP_WINDOW < t <= now)
    if len(window) < cap:
        return None
    return window[len(window) - cap] + CAP_WINDOW


@dataclass(frozen=True)
class Plan:
    """What to do with a due step now: ``send``, ``defer`` (to ``until``) or ``skip``."""

    action: Literal["send", "defer", "skip"]
    until: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Previous:
    """The last email this enrollment sent, as a step condition reads it."""

    opened: bool
    clicked: bool


def condition_holds(condition: str | None, previous: Previous | None) -> bool:
    if condition is None:
        return True
    opened = previous is not None and previous.opened
    clicked = previous is not None and previous.clicked
    return {
        "not_opened_previous": not opened,
        "opened_previous": opened,
        "not_clicked_previous": not clicked,
        "clicked_previous": clicked,
    }[condition]


def plan_send(
    *,
    now: datetime,
    category: str,
    immediate: bool,
    condition: str | None,
    previous: Previous | None,
    timezone_name: str | None,
    quiet: QuietHours,
    recent_marketing: Iterable[datetime],
    cap: int,
) -> Plan:
    """The sending policy for one due step: its condition, then quiet hours in the person's time
    zone (an immediate answer such as a welcome is not held), then the weekly cap on marketing
    emails across sequences (transactional emails are never capped)."""
    if not condition_holds(condition, previous):
        return Plan("skip", reason=f"condition:{condition}")
    if not immediate:
        until = quiet_until(now, timezone_name=timezone_name, quiet=quiet)
        if until is not None:
            return Plan("defer", until=until, reason="quiet_hours")
    if category == "marketing":
        until = cap_until(now, recent_marketing, cap=cap)
        if until is not None:
            return Plan("defer", until=until, reason="frequency_cap")
    return Plan("send")


def retry_at(now: datetime, attempts: int, *, base: timedelta, ceiling: timedelta) -> datetime:
    """Exponential backoff after the ``attempts``-th failed send: base, 2x, 4x... up to ceiling."""
    return now + min(base * (2 ** max(attempts - 1, 0)), ceiling)


def template_candidates(template: str, language: str | None, *, fallback: str = "en") -> list[str]:
    """Template bases to try, best first: the person's language (``fa-IR`` reads as ``fa``),
    then the fallback language."""
    primary = (language or "").strip().lower().replace("_", "-").split("-")[0]
    names = [f"{template}.{primary}"] if primary and primary != fallback else []
    return [*names, f"{template}.{fallback}"]


def first_name(name: str | None) -> str:
    return (name or "").strip().split(" ")[0] if name and name.strip() else ""


# --------------------------------------------------------------------------- engagement


POINTS = {"open": 5, "click": 15, "reply": 40, "feedback": 10}
HALF_LIFE = timedelta(days=30)


def engagement_after(score: int, since: datetime | None, *, now: datetime, kind: str) -> int:
    """The engagement score 0-100 after one more signal; it halves every 30 days without one."""
    decayed = score
    if since is not None and now > since:
        decayed = int(score * 0.5 ** ((now - since) / HALF_LIFE))
    return max(0, min(100, decayed + POINTS.get(kind, 0)))


def becomes_sales_ready(score: int, *, threshold: int, already: bool) -> bool:
    """Sales readiness is announced once: the first time the score reaches the threshold."""
    return not already and score >= threshold


def is_high_value(*, tier: str | None, segment: str | None, sales_ready: bool) -> bool:
    """A reply a person should answer themselves today: a good client or a hot prospect."""
    return tier in ("best", "good") or segment == "ideal" or sales_ready


_COMPLAINT_WORDS = re.compile(
    r"complain|disappoint|terribl|awful|unacceptable|worst|angry|refund|rude|broken|not happy|poor",
    re.IGNORECASE,
)


def is_complaint(score: int | None, comment: str | None) -> bool:
    """A detractor score (0-6) or a comment that reads like a complaint. Flagged and counted,
    never dropped: a complaint is the most useful feedback there is."""
    return (score is not None and score <= 6) or bool(comment and _COMPLAINT_WORDS.search(comment))


# --------------------------------------------------------------------------- signed links


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def unsubscribe_token(secret: str, lead_id: uuid.UUID) -> str:
    """A public, unguessable token naming the person: ``<lead_id hex>.<HMAC-SHA256, base64url>``."""
    return f"{lead_id.hex}.{_mac(secret, f'unsubscribe:{lead_id}')}"


def verify_unsubscribe_token(secret: str, token: str) -> uuid.UUID | None:
    """The person a token names, or None when it was not signed with ``secret``."""
    try:
        raw_id, _ = token.split(".", 1)
        lead_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    return lead_id if hmac.compare_digest(unsubscribe_token(secret, lead_id).encode(), token.encode()) else None


TokenPurpose = Literal["open", "click", "survey"]


def message_token(secret: str, purpose: TokenPurpose, message_id: uuid.UUID, extra: str = "") -> str:
    """A token for one purpose on one message (for clicks, ``extra`` is the target URL, so a
    token cannot be reused to redirect elsewhere)."""
    return f"{message_id.hex}.{_mac(secret, f'{purpose}:{message_id}:{extra}')}"


def verify_message_token(secret: str, purpose: TokenPurpose, token: str, extra: str = "") -> uuid.UUID | None:
    try:
        raw_id, _ = token.split(".", 1)
        message_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    expected = message_token(secret, purpose, message_id, extra)
    return message_id if hmac.compare_digest(expected.encode(), token.encode()) else None


# --------------------------------------------------------------------------- inbound threads

_MESSAGE_ID = re.compile(r"<?\s*([0-9a-fA-F-]{32,36})@[^>\s]+>?")


def thread_message_ids(in_reply_to: str | None, references: str | None) -> list[uuid.UUID]:
    """The Message-IDs an inbound e-mail's thread names, newest first (In-Reply-To, then
    References from the end): ours have the sent message's id as their local part."""
    found: list[uuid.UUID] = []
    for header in (in_reply_to or "", " ".join(reversed((references or "").split()))):
        for local in _MESSAGE_ID.findall(header):
            try:
                message_id = uuid.UUID(local)
            except ValueError:
                continue
            if message_id not in found:
                found.append(message_id)
    return found[:50]

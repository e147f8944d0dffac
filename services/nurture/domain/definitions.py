"""Reading a sequence definition (a YAML file or the JSON body of ``PUT /sequences/{name}``)
into a ``Sequence``, checked against the event contract. Pure: the contract comes in as values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from services.nurture.domain.sequences import (
    CATEGORIES,
    CONDITIONS,
    EXIT_ALIASES,
    SEGMENT_FIELDS,
    Reentry,
    Sequence,
    SequenceError,
    Step,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DELAY = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        # One field, or several (``per: [invoice_id, to_state]``: once per invoice and state).
        names = per if isinstance(per, list) and per else [per]
        for one in names:
            if not isinstance(one, str) or "," in one or (fields is not None and one not in fields):
                raise SequenceError(f"{name}: reentry per {one!r} is not a field of the trigger's payload")
        return Reentry("per", per=",".join(names))
    if isinstance(raw, Mapping) and len(raw) == 1 and "after" in raw:
        try:
            return Reentry("after", after=parse_delay(raw["after"]))
        except SequenceError as exc:
            raise SequenceError(f"{name}: reentry after: {exc}") from None
    raise SequenceError(f"{name}: reentry {raw!r}: use never, always, {{per: <field or fields>}} or {{after: <delay>}}")


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
    # ``match``, not ``on``: YAML 1.1 reads a bare ``on`` key as the boolean true.
    match_raw = data.get("match") or {}
    if not isinstance(match_raw, Mapping):
        raise SequenceError(f"{name}: match must map fields of the trigger's payload to a value or a list")
    match: dict[str, frozenset[str]] = {}
    for key, value in match_raw.items():
        if not isinstance(key, str) or (fields is not None and key not in fields):
            raise SequenceError(f"{name}: match {key!r} is not a field of the trigger's payload")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int) and str(v) for v in values):
            raise SequenceError(f"{name}: match {key} must be a value or a list of values")
        match[key] = frozenset(str(v).lower() for v in values)
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
        match=match,
        source=dict(data),
    )

"""Change requests on a signed deal: in the estimate's scope (free) or a paid change order."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing of what a change is about: one text split once at import (as a list
# literal, SIM905's advice, it would take fifty lines to say the same).
_STOP = frozenset(
    "the a an and or of to for on in at with by from our your their we you it this that these those is are be "  # noqa: SIM905
    "add new more some change changes changed please also another extra make can could would should".split()
)


def _tokens(text: str) -> set[str]:
    words = {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words}


@dataclass(frozen=True)
class ScopeDecision:
    in_scope: bool
    line: int | None
    amount: Decimal
    hours: Decimal | None
    reason: str


def hours_used(earlier: Iterable[tuple[bool, int | None, Decimal | None]]) -> dict[int, Decimal]:
    """Hours already taken from each estimate line by earlier in-scope changes, from
    (in scope, line, hours) per earlier request."""
    used: dict[int, Decimal] = {}
    for in_scope, line, hours in earlier:
        if in_scope and line is not None and hours is not None:
            used[line] = used.get(line, Decimal(0)) + hours
    return used


def _matching_line(lines: list[dict[str, Any]], description: str) -> int | None:
    """The line whose description shares at least half the words of the shorter of the two."""
    wanted = _tokens(description)
    best, score = None, 0.0
    for i, scope_line in enumerate(lines):
        have = _tokens(str(scope_line.get("description", "")))
        if not wanted or not have:
            continue
        overlap = len(wanted & have) / min(len(wanted), len(have))
        if overlap > score:
            best, score = i, overlap
    return best if score >= 0.5 else None


def assess_change(
    lines: list[dict[str, Any]],
    *,
    description: str,
    hours: Decimal | None,
    amount: Decimal | None,
    hourly_rate: Decimal | None,
    used_hours: dict[int, Decimal],
    line: int | None = None,
    in_scope: bool | None = None,
) -> ScopeDecision:
    """Check a change request against the estimate's lines.

    In scope: it is about a line of the estimate (named by ``line`` or matched by its words) and
    its hours fit in what is left of that line's hours. Anything else is a paid change order,
    priced by ``amount`` or by ``hours`` x ``hourly_rate``. Sales may decide ``in_scope``
    explicitly; an out-of-scope decision still needs a price."""
    if line is not None and not 0 <= line < len(lines):
        raise ValueError(f"line {line} is not on the estimate (it has {len(lines)} lines, numbered from 0)")
    matched = line if line is not None else _matching_line(lines, description)
    reason: str
    if in_scope is None:
        if matched is None:
            in_scope, reason = False, "matches no line of the estimate"
        else:
            planned = lines[matched].get("hours")
            left = None if planned is None else Decimal(str(planned)) - used_hours.get(matched, Decimal(0))
            if hours is not None and left is not None and hours > left:
                in_scope, reason = (
                    False,
                    f"line {matched} has {max(left, Decimal(0))} hours left, the change needs {hours}",
                )
            else:
                in_scope, reason = True, f"covered by line {matched}: {lines[matched].get('description')!r}"
    else:
        reason = "decided by sales"
    if in_scope:
        return ScopeDecision(True, matched, Decimal(0), hours, reason)
    if amount is None:
        if hours is None or hourly_rate is None:
            raise ValueError(
                f"out of scope ({reason}): a change order needs an amount, or hours and an hourly rate on the deal"
            )
        amount = (hours * hourly_rate).quantize(Decimal("0.01"))
    return ScopeDecision(False, matched, amount, hours, reason)

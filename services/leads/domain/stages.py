"""The funnel: stages, the events that move a lead between them, and conversion."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

ORDER = ("awareness", "interest", "consideration", "decision", "action", "retention", "advocacy")
STAGES = (*ORDER, "churned", "disqualified")

# Events that move a lead forward (or back) in the funnel, and where to.
STAGE_ON_EVENT = {
    "email.clicked": "interest",
    "email.replied": "interest",
    "feedback.received": "interest",
    "lead.qualified": "consideration",
    "lead.sales_ready": "consideration",
    "deal.proposed": "decision",
    "lead.disqualified": "disqualified",
    "deposit.cleared": "action",
    "repeat_deal.won": "retention",
    "cancellation.saved": "retention",
    "cancellation.completed": "churned",
    "referral.made": "advocacy",
    "lead.returned": "interest",
}
# Signals of interest never drag a lead back down the funnel or out of churned/disqualified.
_FORWARD_ONLY = {
    "email.clicked",
    "email.replied",
    "feedback.received",
    "lead.sales_ready",
    "lead.qualified",
    "deal.proposed",
}


def entry_time_matters(current: str) -> bool:
    """Whether ``next_stage`` needs to know when the lead entered ``current`` (a read the
    caller can skip otherwise): only a churned client's late events are told apart by it."""
    return current == "churned"


def next_stage(
    current: str, cause: str, *, occurred_at: datetime | None = None, entered_at: datetime | None = None
) -> str | None:
    """The stage ``cause`` moves a lead to, or None when it does not move it. ``occurred_at``
    is when the event happened and ``entered_at`` when the lead entered ``current``."""
    target = STAGE_ON_EVENT.get(cause)
    if target is None or target == current:
        return None
    if entry_time_matters(current) and occurred_at is not None and entered_at is not None and occurred_at < entered_at:
        # Topics are read independently, so a deposit that cleared before the client left can
        # be applied after the cancellation: it does not bring the client back.
        return None
    if cause in _FORWARD_ONLY:
        if current == "churned" and cause == "deal.proposed":
            return target  # a churned client comes back with a new estimate
        if current == "disqualified" and cause in ("lead.qualified", "deal.proposed"):
            return target  # sales changed its mind: qualification or an estimate reopens it
        if current not in ORDER or ORDER.index(current) >= ORDER.index(target):
            return None
    if cause == "referral.made" and current not in ("action", "retention"):
        return None
    if cause in ("repeat_deal.won", "cancellation.saved") and current != "action":
        return None
    if cause == "lead.returned" and current != "churned":
        return None
    if cause == "lead.disqualified" and current in ("action", "retention", "advocacy"):
        return None  # a paying client is not disqualified by a BANT form
    return target


def reached_rank(stages: Iterable[str]) -> int:
    """Furthest point of the main path a lead ever reached (-1 when none)."""
    return max((ORDER.index(s) for s in stages if s in ORDER), default=-1)


@dataclass
class FunnelCounts:
    stages: dict[str, int]
    reached: dict[str, int]
    total: int

    def conversion(self) -> list[dict[str, Any]]:
        out = []
        for a, b in itertools.pairwise(ORDER):
            base = self.reached[a]
            out.append({"from_stage": a, "to_stage": b, "rate": _rate(self.reached[b], base)})
        return out

    def overall(self) -> str | None:
        """Share of everyone who entered the funnel that became a paying client."""
        return _rate(self.reached["action"], self.reached["awareness"])


def _rate(part: int, whole: int) -> str | None:
    return None if whole == 0 else str((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001")))


def funnel_counts(rows: Iterable[tuple[str, int]]) -> FunnelCounts:
    """``rows``: (current stage, furthest rank reached) per lead."""
    stages = dict.fromkeys(STAGES, 0)
    reached = dict.fromkeys(ORDER, 0)
    total = 0
    for stage, rank in rows:
        total += 1
        stages[stage] = stages.get(stage, 0) + 1
        for i in range(rank + 1):
            reached[ORDER[i]] += 1
    return FunnelCounts(stages, reached, total)


def period_of(moment: datetime, grain: str) -> str:
    if grain == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if grain == "quarter":
        return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"
    if grain == "year":
        return str(moment.year)
    return f"{moment.year}-{moment.month:02d}"

"""Terminations: the agency, not the client, ends a relationship, with notice.

A termination is not churn: the client did not leave, the agency let them go (a `fire` client
from the tier review, non-payment, scope abuse, staff mistreated). It is reported apart in the
economics and never counted in logo or revenue churn, NRR or GRR (``economics.split_lost``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.events import TERMINATION_REASONS

# Billing ends a terminated client's subscriptions with this reason prefix.
TERMINATED_PREFIX = "terminated:"
TERMINATION_STATUSES = ("notice", "ended")
MAX_NOTICE_DAYS = 365

__all__ = [
    "MAX_NOTICE_DAYS",
    "TERMINATED_PREFIX",
    "TERMINATION_REASONS",
    "TERMINATION_STATUSES",
    "effective_at",
    "ended_by_termination",
    "termination_status",
]


def effective_at(now: datetime, notice_days: int) -> datetime:
    """When a termination given ``now`` with ``notice_days`` of notice takes effect."""
    if not 0 <= notice_days <= MAX_NOTICE_DAYS:
        raise ValueError(f"notice_days must be between 0 and {MAX_NOTICE_DAYS}, not {notice_days}")
    return now + timedelta(days=notice_days)


def termination_status(effective: datetime, now: datetime) -> str:
    """``notice`` until the relationship ends, ``ended`` from ``effective`` on."""
    return "ended" if effective <= now else "notice"


def ended_by_termination(reason: str | None) -> bool:
    """Whether a subscription ended with this reason was ended by a termination
    (``terminated:<reason>``), not by the client or by dunning."""
    return bool(reason) and str(reason).startswith(TERMINATED_PREFIX)

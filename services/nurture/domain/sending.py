"""Sending rules: which due steps go now, who may be emailed and when (consent, quiet hours in
the person's time zone, the cap on marketing emails), retries, and which template language.

Pure: every function takes values (including "now") and returns decisions. The numbers are
policies the service's settings provide (``SendingPolicy``, ``RetryPolicy``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal, Protocol

from shared.zones import zone


@dataclass(frozen=True)
class PendingStep:
    """What the sender needs to know about a scheduled step to decide whether it goes now."""

    id: uuid.UUID
    lead_id: uuid.UUID
    due_at: datetime


def select_due(pending: Iterable[PendingStep], *, now: datetime, held: set[uuid.UUID], limit: int) -> list[PendingStep]:
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


def unsubscribe_takes_effect(*, unsubscribed: bool, consent_marketing: bool) -> bool:
    """An unsubscribe changes something (and is published) unless the person already
    unsubscribed and gave no consent since: a second click changes nothing."""
    return not unsubscribed or consent_marketing


@dataclass(frozen=True)
class QuietHours:
    """Local hours no scheduled email is sent in, e.g. 21 to 8; ``start == end`` turns it off."""

    start: int = 21
    end: int = 8

    @property
    def off(self) -> bool:
        return self.start == self.end


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


# The cap counts marketing emails in any window this long (a week, unless the settings say).
CAP_WINDOW = timedelta(days=7)


class SendingPolicy(Protocol):
    """The sending policy's numbers (the settings' ``sending`` group provides them)."""

    @property
    def quiet(self) -> QuietHours: ...

    @property
    def cap(self) -> int: ...

    @property
    def cap_window(self) -> timedelta: ...


@dataclass(frozen=True)
class Limits:
    """A sending policy as plain values."""

    quiet: QuietHours = QuietHours()
    cap: int = 3
    cap_window: timedelta = CAP_WINDOW


# No quiet hours and no cap worth the name: what a claim applies when given no policy.
NO_LIMITS = Limits(QuietHours(0, 0), cap=10**6)


def cap_until(
    now: datetime, recent_marketing: Iterable[datetime], *, cap: int, window: timedelta = CAP_WINDOW
) -> datetime | None:
    """With ``cap`` marketing emails already in the last ``window``, when the next may go (the
    oldest of them leaves the window); None when under the cap."""
    within = sorted(t for t in recent_marketing if now - window < t <= now)
    if len(within) < cap:
        return None
    return within[len(within) - cap] + window


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
    """Whether a step's condition holds against the last email its enrollment sent (none: it
    was neither opened nor clicked)."""
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
    cap_window: timedelta = CAP_WINDOW,
) -> Plan:
    """The sending policy for one due step: its condition, then quiet hours in the person's time
    zone (an immediate answer such as a welcome is not held), then the cap on marketing emails
    across sequences in any ``cap_window`` (transactional emails are never capped)."""
    if not condition_holds(condition, previous):
        return Plan("skip", reason=f"condition:{condition}")
    if not immediate:
        until = quiet_until(now, timezone_name=timezone_name, quiet=quiet)
        if until is not None:
            return Plan("defer", until=until, reason="quiet_hours")
    if category == "marketing":
        until = cap_until(now, recent_marketing, cap=cap, window=cap_window)
        if until is not None:
            return Plan("defer", until=until, reason="frequency_cap")
    return Plan("send")


def retry_at(now: datetime, attempts: int, *, base: timedelta, ceiling: timedelta) -> datetime:
    """Exponential backoff after the ``attempts``-th failed send: base, 2x, 4x... up to ceiling."""
    return now + min(base * (2 ** max(attempts - 1, 0)), ceiling)


class RetryPolicy(Protocol):
    """How a refused send is retried (the settings' ``retry`` group provides it)."""

    @property
    def base(self) -> timedelta: ...

    @property
    def ceiling(self) -> timedelta: ...

    @property
    def max_attempts(self) -> int: ...


def next_attempt_at(now: datetime, attempts: int, *, policy: RetryPolicy) -> datetime | None:
    """When a step whose ``attempts``-th send was refused is tried again; None when that was
    its last attempt (the step fails)."""
    if attempts >= policy.max_attempts:
        return None
    return retry_at(now, attempts, base=policy.base, ceiling=policy.ceiling)


def template_candidates(template: str, language: str | None, *, fallback: str = "en") -> list[str]:
    """Template bases to try, best first: the person's language (``fa-IR`` reads as ``fa``),
    then the fallback language."""
    primary = (language or "").strip().lower().replace("_", "-").split("-")[0]
    names = [f"{template}.{primary}"] if primary and primary != fallback else []
    return [*names, f"{template}.{fallback}"]


def first_name(name: str | None) -> str:
    """The first word of a person's name, for a greeting (empty when there is no name)."""
    return (name or "").strip().split(" ")[0] if name and name.strip() else ""

"""How a client's tier is decided (docs/design.md, "Business rules": client tiers).

``fire`` costs more than it brings, ``best`` is big, repeat, punctual and happy, ``tolerable``
has friction or is a one-off, everyone else is ``good``. The thresholds are ``TierPolicy``'s
(``RETENTION_TIER_*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

TIERS = ("best", "good", "tolerable", "fire")
DEFAULT_TIER = "good"


def _named(name: str) -> AliasChoices:
    """A policy field, also given by its settings name (``RETENTION_TIER_`` + the name)."""
    return AliasChoices(name, f"tier_{name}")


class TierPolicy(BaseModel):
    """Thresholds of the tier rules, and how often the review runs."""

    model_config = ConfigDict(frozen=True)

    review_every: Literal["monthly", "quarterly"] = Field(default="monthly", validation_alias=_named("review_every"))
    best_min_revenue: Decimal = Field(
        default=Decimal("10000"),
        ge=0,
        validation_alias=_named("best_min_revenue"),
        description="revenue a `best` client has brought",
    )
    fire_late_payments: int = Field(default=3, ge=1, validation_alias=_named("fire_late_payments"))
    fire_late_share: Decimal = Field(
        default=Decimal("0.5"),
        gt=0,
        le=1,
        validation_alias=_named("fire_late_share"),
        description="more than this share of payments late is a costly habit too",
    )
    fire_late_share_min_paid: int = Field(
        default=2,
        ge=1,
        validation_alias=_named("fire_late_share_min_paid"),
        description="payments needed before the late share counts",
    )
    fire_out_of_scope: int = Field(default=3, ge=1, validation_alias=_named("fire_out_of_scope"))
    fire_complaints: int = Field(default=2, ge=1, validation_alias=_named("fire_complaints"))
    fire_failures: int = Field(default=3, ge=1, validation_alias=_named("fire_failures"))
    fire_leaked_share: Decimal = Field(
        default=Decimal("0.25"),
        gt=0,
        validation_alias=_named("fire_leaked_share"),
        description="unbilled scope of at least this share of revenue is a low margin",
    )


@dataclass(frozen=True)
class TierEvidence:
    """What the tier review looks at (counts since the client arrived, revenue in its currency)."""

    deals_won: int = 0
    has_subscription: bool = False
    revenue: Decimal = Decimal(0)
    payments_on_time: int = 0
    payments_late: int = 0
    payments_failed: int = 0
    complaints: int = 0
    out_of_scope_requests: int = 0
    leaked: Decimal = Decimal(0)
    band: str | None = None
    red_flags: int = 0


def classify_tier(e: TierEvidence, policy: TierPolicy) -> tuple[str, list[str]]:
    """The tiers of docs/design.md. ``fire`` costs more than it brings (two costly habits, or
    one in poor health); ``best`` is big, repeat, punctual and happy; ``tolerable`` has
    friction or is a one-off; everyone else is ``good``. Returns the tier and the reasons, in
    words."""
    paid = e.payments_on_time + e.payments_late
    costly: list[str] = []
    mostly_late = paid >= policy.fire_late_share_min_paid and e.payments_late > paid * policy.fire_late_share
    if e.payments_late >= policy.fire_late_payments or mostly_late:
        costly.append(f"late payments: {e.payments_late} of {paid}")
    if e.out_of_scope_requests >= policy.fire_out_of_scope:
        costly.append(f"out-of-scope demands: {e.out_of_scope_requests}")
    if e.complaints >= policy.fire_complaints:
        costly.append(f"complaints: {e.complaints}")
    if e.payments_failed >= policy.fire_failures:
        costly.append(f"failed payments: {e.payments_failed}")
    if e.leaked > 0 and e.revenue > 0 and e.leaked >= e.revenue * policy.fire_leaked_share:
        costly.append(f"low margin: unbilled scope {e.leaked} against revenue {e.revenue}")
    if len(costly) >= 2 or (costly and e.band == "red"):
        return "fire", costly + (["health in the red band"] if e.band == "red" else [])
    friction: list[str] = list(costly)
    if e.payments_late or e.payments_failed:
        friction.append("budget friction: late or failed payments")
    if e.deals_won <= 1 and not e.has_subscription:
        friction.append("one-off project")
    if e.band == "red":
        friction.append("health in the red band")
    if friction:
        return "tolerable", friction
    repeat = e.deals_won >= 2 or e.has_subscription
    if repeat and e.revenue >= policy.best_min_revenue and e.band == "green" and e.red_flags == 0:
        return "best", [
            f"repeat work ({e.deals_won} deals{', a retainer' if e.has_subscription else ''})",
            f"revenue {e.revenue}",
            "pays on time, no complaints, green health",
        ]
    return "good", ["pays, no costly habits" + ("" if repeat else "; not repeat work yet")]


def review_period(now: datetime, every: str) -> str:
    """The review period ``now`` falls in: ``2026-06`` monthly, ``2026-Q2`` quarterly."""
    if every == "quarterly":
        return f"{now.year}-Q{(now.month - 1) // 3 + 1}"
    return f"{now.year}-{now.month:02d}"


# --------------------------------------------------------------------------- notes and the manual tier
#
# **Notes** carry tags from a fixed list (``NOTE_TAGS``). Two of them say the client costs the
# agency more than money: ``mistreats_staff`` and ``blames_us``. Either one noted on
# ``LET_GO_NOTES`` (2) or more notes within ``LET_GO_WINDOW_DAYS`` (90) days before the review
# makes the client a let-go candidate: the computed tier is ``fire`` with the reason
# "mistreats_staff noted 2 times in 90 days" (the other rules' reasons kept when they said
# ``fire`` too). Older notes, and the other tags, change no tier.
#
# **The manual tier**: an admin may set a client's tier by hand, with a reason, until a day
# (``until``, exclusive: it ends at 00:00 UTC of that day). While in force it is the client's
# tier (``effective_tier``), with the reason "set by hand: <reason>"; the review still computes
# the tier from the evidence and shows both. Once ``until`` has come, the computed tier is the
# tier again.

NOTE_TAGS = ("blames_us", "mistreats_staff", "expectation_mismatch", "scope_creep", "slow_payer", "great_partner")
LET_GO_TAGS = ("mistreats_staff", "blames_us")
LET_GO_NOTES = 2
LET_GO_WINDOW_DAYS = 90


def let_go_from_notes(
    notes: Iterable[tuple[datetime, Sequence[str]]],
    now: datetime,
    *,
    window_days: int = LET_GO_WINDOW_DAYS,
    threshold: int = LET_GO_NOTES,
) -> list[str]:
    """The let-go reasons the notes give: each of ``LET_GO_TAGS`` on ``threshold`` or more notes
    written within ``window_days`` days before ``now`` (a note written later than ``now`` is not
    counted). ``notes`` are (when written, its tags)."""
    since = now - timedelta(days=window_days)
    counts = dict.fromkeys(LET_GO_TAGS, 0)
    for at, tags in notes:
        if since <= at <= now:
            for tag in set(tags) & set(LET_GO_TAGS):
                counts[tag] += 1
    return [f"{tag} noted {n} times in {window_days} days" for tag, n in counts.items() if n >= threshold]


def with_notes(tier: str, reasons: list[str], note_reasons: list[str]) -> tuple[str, list[str]]:
    """The computed tier once the notes are counted: ``fire`` when they give a let-go reason."""
    if not note_reasons:
        return tier, reasons
    return "fire", (reasons if tier == "fire" else []) + note_reasons


@dataclass(frozen=True)
class ManualTier:
    """A tier an admin set by hand: it wins over the computed one until ``until`` (exclusive)."""

    tier: str
    reason: str
    until: date
    set_by: str | None = None

    def in_force(self, now: datetime) -> bool:
        return now.date() < self.until


def effective_tier(
    computed: str, reasons: list[str], manual: ManualTier | None, now: datetime
) -> tuple[str, list[str], bool]:
    """The client's tier now, its reasons, and whether it is the manual one."""
    if manual is not None and manual.in_force(now):
        return manual.tier, [f"set by hand: {manual.reason}"], True
    return computed, reasons, False

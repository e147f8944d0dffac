"""How a client's tier is decided (docs/design.md, "Business rules": client tiers).

``fire`` costs more than it brings, ``best`` is big, repeat, punctual and happy, ``tolerable``
has friction or is a one-off, everyone else is ``good``. The thresholds are ``TierPolicy``'s
(``RETENTION_TIER_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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

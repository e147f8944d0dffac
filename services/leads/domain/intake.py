"""What a lead is told apart by: the channels they come from, the tiers retention gives
clients, and what they told us at capture."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

INBOUND_CHANNELS = frozenset({"website", "seo", "content", "social", "email", "referral", "event"})
OUTBOUND_CHANNELS = frozenset({"cold_call", "cold_email", "paid_ads", "networking", "direct_mail", "tender"})
CHANNELS = INBOUND_CHANNELS | OUTBOUND_CHANNELS

# Client tiers as retention reviews them (``client.tier_changed``); the deposit share reads them.
TIERS = ("best", "good", "tolerable", "fire")


@dataclass(frozen=True)
class Intake:
    """What a lead told us at capture, already validated."""

    industry: str | None = None
    employees: int | None = None
    annual_revenue: Decimal | None = None
    country: str | None = None
    job_title: str | None = None
    needs: tuple[str, ...] = ()
    budget: Decimal | None = None
    brief: str | None = None
    timeline: str | None = None

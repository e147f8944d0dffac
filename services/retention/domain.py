"""Pure rules of retention: client health, bands, subscription summary, save offers, churn.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shared.money import quantize

TIERS = ("best", "good", "tolerable", "fire")
DEFAULT_TIER = "good"
BANDS = ("red", "yellow", "green")
SUBSCRIPTION_STATUSES = ("none", "active", "paused", "cancelled")
CANCELLATION_REASONS = (
    "price",
    "budget_cut",
    "not_using",
    "poor_results",
    "switching_provider",
    "project_done",
    "other",
)
CANCELLATION_STATUSES = ("requested", "saved", "completed")
OFFER_KINDS = ("pause", "discount", "none")
FACTORS = ("punctuality", "failures", "complaints", "engagement", "tenure")

_HUNDRED = Decimal(100)


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class HealthEvidence:
    """What we have seen of a client, counted."""

    payments_on_time: int = 0
    payments_late: int = 0
    payments_failed: int = 0
    complaints: int = 0
    feedback_count: int = 0
    client_since: datetime | None = None


@dataclass(frozen=True)
class HealthPolicy:
    """Weights and penalties of the health score (from settings)."""

    weights: Mapping[str, int]
    failure_penalty: int = 25
    complaint_penalty: int = 25
    engagement_placeholder: int = 50
    tenure_full_days: int = 365
    yellow_from: int = 51
    green_from: int = 76

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FACTORS)
        if unknown:
            raise ValueError(f"unknown health factors: {sorted(unknown)}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one health weight must be positive")


@dataclass(frozen=True)
class Factor:
    name: str
    value: int  # 0-100, higher is healthier
    weight: int
    evidence: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "weight": self.weight, "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class Health:
    score: int
    band: str
    factors: tuple[Factor, ...]

    def factors_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: f.as_dict() for f in self.factors}


def band_of(score: int, *, yellow_from: int = 51, green_from: int = 76) -> str:
    """red 0-50, yellow 51-75, green 76-100 with the default thresholds."""
    if score >= green_from:
        return "green"
    if score >= yellow_from:
        return "yellow"
    return "red"


def _clamp(value: int) -> int:
    return max(0, min(100, value))


def _round(value: Decimal) -> int:
    # Half up, as people round scores (round() on a Decimal is half-even).
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tenure_days(client_since: datetime | None, now: datetime) -> int:
    if client_since is None:
        return 0
    return max(0, (now - client_since).days)


def assess_health(evidence: HealthEvidence, policy: HealthPolicy, *, now: datetime) -> Health:
    """Weighted mean of factor values 0-100, rounded half up, and its band.

    With no evidence a factor about bad behaviour scores full marks: a new client has not
    failed us yet, and a neutral start keeps the first real signal visible."""
    paid = evidence.payments_on_time + evidence.payments_late
    punctuality = 100 if paid == 0 else _round(Decimal(100 * evidence.payments_on_time) / paid)
    days = tenure_days(evidence.client_since, now)
    values = {
        "punctuality": Factor(
            "punctuality",
            punctuality,
            0,
            {"on_time": evidence.payments_on_time, "late": evidence.payments_late},
        ),
        "failures": Factor(
            "failures",
            _clamp(100 - policy.failure_penalty * evidence.payments_failed),
            0,
            {"failed": evidence.payments_failed},
        ),
        "complaints": Factor(
            "complaints",
            _clamp(100 - policy.complaint_penalty * evidence.complaints),
            0,
            {"complaints": evidence.complaints, "feedback": evidence.feedback_count},
        ),
        # Placeholder until engagement events (opens, replies, takeovers) are scored here.
        "engagement": Factor("engagement", _clamp(policy.engagement_placeholder), 0, {}),
        "tenure": Factor(
            "tenure",
            _clamp(100 * days // policy.tenure_full_days),
            0,
            {"days": days},
        ),
    }
    factors = tuple(
        Factor(name, values[name].value, int(policy.weights.get(name, 0)), values[name].evidence)
        for name in FACTORS
    )
    total_weight = sum(f.weight for f in factors)
    score = _round(sum((Decimal(f.value * f.weight) for f in factors), Decimal(0)) / total_weight)
    return Health(score, band_of(score, yellow_from=policy.yellow_from, green_from=policy.green_from), factors)


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class SubscriptionView:
    status: str  # active | paused | cancelled
    monthly_fee: Decimal | None
    currency: str | None


def subscription_status(statuses: Iterable[str]) -> str:
    """One status for a client with several subscriptions: the liveliest one wins."""
    seen = set(statuses)
    for status in ("active", "paused", "cancelled"):
        if status in seen:
            return status
    return "none"


def mrr_by_currency(subscriptions: Iterable[SubscriptionView]) -> dict[str, Decimal]:
    """Monthly recurring revenue of active subscriptions; a paused one is not MRR (nor churn)."""
    totals: dict[str, Decimal] = {}
    for sub in subscriptions:
        if sub.status == "active" and sub.monthly_fee is not None and sub.currency:
            totals[sub.currency] = totals.get(sub.currency, Decimal(0)) + sub.monthly_fee
    return dict(sorted(totals.items()))


def add_money(totals: Mapping[str, Decimal], rows: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Sum (currency, amount) rows into per-currency totals; currencies never mix."""
    result = dict(totals)
    for currency, amount in rows:
        result[currency] = result.get(currency, Decimal(0)) + amount
    return dict(sorted(result.items()))


# --------------------------------------------------------------------------- save offers


@dataclass(frozen=True)
class OfferPolicy:
    pause_fee_share: Decimal = Decimal("0.2")
    pause_months: int = 2
    discount_percent: Decimal = Decimal("20")
    discount_months: int = 3


@dataclass(frozen=True)
class Offer:
    kind: str  # pause | discount | none
    fee: Decimal | None = None
    discount_percent: Decimal | None = None
    months: int | None = None
    currency: str | None = None
    description: str = ""


def choose_offer(
    *,
    tier: str | None,
    band: str | None,
    reason: str,
    monthly_fee: Decimal | None,
    currency: str | None,
    policy: OfferPolicy,
) -> Offer:
    """The save offer for a client who asks to cancel.

    ``fire`` clients cost more than they bring: we let them go. A ``tolerable`` client in the
    red band is the same bet, so it is not bought back either. Price complaints get a
    discount; every other reason gets a pause at a low fee (a pause is not churn)."""
    if reason not in CANCELLATION_REASONS:
        raise ValueError(f"unknown cancellation reason {reason!r}")
    if tier == "fire":
        return Offer("none", description="no save offer: the client is in the fire tier")
    if tier == "tolerable" and band == "red":
        return Offer("none", description="no save offer: a tolerable client in poor health")
    fee = monthly_fee or Decimal(0)
    if reason == "price":
        discounted = quantize(fee * (_HUNDRED - policy.discount_percent) / _HUNDRED)
        return Offer(
            "discount",
            fee=discounted,
            discount_percent=policy.discount_percent,
            months=policy.discount_months,
            currency=currency,
            description=(
                f"{format(policy.discount_percent.normalize(), 'f')}% off for {policy.discount_months} months:"
                f" {discounted} {currency or ''} a month".rstrip()
            ),
        )
    paused = quantize(fee * policy.pause_fee_share)
    return Offer(
        "pause",
        fee=paused,
        months=policy.pause_months,
        currency=currency,
        description=f"pause for {policy.pause_months} months at {paused} {currency or ''} a month".rstrip(),
    )


# --------------------------------------------------------------------------- economics


@dataclass(frozen=True)
class LogoChurn:
    rate: Decimal | None
    lost: int
    base: int
    reason: str | None = None


def logo_churn(*, lost: int, base: int) -> LogoChurn:
    """Lost clients over the clients they came from; no base, no rate (never a division by 0)."""
    if base <= 0:
        return LogoChurn(None, lost, base, "no client has ever subscribed: churn is undefined")
    rate = (Decimal(lost) / Decimal(base)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return LogoChurn(rate, lost, base)

"""Pure rules of retention: client health, bands, subscription summary, save offers, churn.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
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
FACTORS = ("punctuality", "failures", "complaints", "engagement", "tenure", "scope")
CHURN_RISK_RULES = ("late_payments", "engagement_drop", "complaints", "hours_underused", "price_increase_ahead")
MOVEMENT_KINDS = ("new", "expansion", "contraction", "churn", "pause", "resume")

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
    # Engagement over the recent window; ``engagement_seen`` False means no signal ever (neutral).
    engagement_seen: bool = False
    opens_recent: int = 0
    clicks_recent: int = 0
    unsubscribed: bool = False
    last_feedback_score: int | None = None
    out_of_scope_requests: int = 0


@dataclass(frozen=True)
class HealthPolicy:
    """Weights and penalties of the health score (from settings)."""

    weights: Mapping[str, int]
    failure_penalty: int = 25
    complaint_penalty: int = 25
    engagement_placeholder: int = 50
    tenure_full_days: int = 365
    scope_penalty: int = 10
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
        "engagement": _engagement(evidence, policy),
        "tenure": Factor(
            "tenure",
            _clamp(100 * days // policy.tenure_full_days),
            0,
            {"days": days},
        ),
        "scope": Factor(
            "scope",
            _clamp(100 - policy.scope_penalty * evidence.out_of_scope_requests),
            0,
            {"out_of_scope_requests": evidence.out_of_scope_requests},
        ),
    }
    factors = tuple(
        Factor(name, values[name].value, int(policy.weights.get(name, 0)), values[name].evidence)
        for name in FACTORS
    )
    total_weight = sum(f.weight for f in factors)
    score = _round(sum((Decimal(f.value * f.weight) for f in factors), Decimal(0)) / total_weight)
    return Health(score, band_of(score, yellow_from=policy.yellow_from, green_from=policy.green_from), factors)


def _engagement(evidence: HealthEvidence, policy: HealthPolicy) -> Factor:
    """Opens and clicks of the recent window, a good survey score, minus an unsubscribe.
    A client we never heard from scores the neutral placeholder, not zero."""
    counts = {
        "opens": evidence.opens_recent,
        "clicks": evidence.clicks_recent,
        "unsubscribed": int(evidence.unsubscribed),
    }
    if not evidence.engagement_seen and evidence.last_feedback_score is None:
        return Factor("engagement", _clamp(policy.engagement_placeholder), 0, counts)
    value = 30 + 10 * evidence.opens_recent + 20 * evidence.clicks_recent
    if evidence.last_feedback_score is not None:
        counts["last_feedback_score"] = evidence.last_feedback_score
        value += 20 if evidence.last_feedback_score >= 9 else (-20 if evidence.last_feedback_score <= 6 else 0)
    if evidence.unsubscribed:
        value -= 30
    return Factor("engagement", _clamp(value), 0, counts)


def trend(score: int | None, past: int | None, *, threshold: int = 5) -> dict[str, Any]:
    """Direction of the score against the score ``trend_days`` ago (or the first one known)."""
    if score is None or past is None:
        return {"direction": "unknown", "delta": None, "since_score": past}
    delta = score - past
    direction = "up" if delta >= threshold else ("down" if delta <= -threshold else "flat")
    return {"direction": direction, "delta": delta, "since_score": past}


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


# --------------------------------------------------------------------------- tiers


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


@dataclass(frozen=True)
class TierPolicy:
    best_min_revenue: Decimal = Decimal("10000")
    fire_late_payments: int = 3
    fire_out_of_scope: int = 3
    fire_complaints: int = 2
    fire_failures: int = 3


def classify_tier(e: TierEvidence, policy: TierPolicy) -> tuple[str, list[str]]:
    """DESIGN.md's tiers. ``fire`` costs more than it brings (two costly habits, or one in poor
    health); ``best`` is big, repeat, punctual and happy; ``tolerable`` has friction or is a
    one-off; everyone else is ``good``. Returns the tier and the reasons, in words."""
    paid = e.payments_on_time + e.payments_late
    costly: list[str] = []
    if e.payments_late >= policy.fire_late_payments or (paid >= 2 and e.payments_late * 2 > paid):
        costly.append(f"late payments: {e.payments_late} of {paid}")
    if e.out_of_scope_requests >= policy.fire_out_of_scope:
        costly.append(f"out-of-scope demands: {e.out_of_scope_requests}")
    if e.complaints >= policy.fire_complaints:
        costly.append(f"complaints: {e.complaints}")
    if e.payments_failed >= policy.fire_failures:
        costly.append(f"failed payments: {e.payments_failed}")
    if e.leaked > 0 and e.revenue > 0 and e.leaked * 4 >= e.revenue:
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


# --------------------------------------------------------------------------- churn risk


@dataclass(frozen=True)
class RiskEvidence:
    late_payments_recent: int = 0
    overdue_open: int = 0
    engagement_recent: int = 0
    engagement_before: int = 0
    unsubscribed_recent: bool = False
    complaints_recent: int = 0
    hours_used: Decimal | None = None
    hours_included: Decimal | None = None
    price_increase_at: datetime | None = None


@dataclass(frozen=True)
class RiskPolicy:
    late_payments: int = 2
    engagement_drop_share: Decimal = Decimal("0.5")
    engagement_min_before: int = 2
    underused_share: Decimal = Decimal("0.5")
    price_notice_days: int = 30


def churn_risks(e: RiskEvidence, policy: RiskPolicy, *, now: datetime) -> list[str]:
    """The churn-risk rules that fire now, by name (``CHURN_RISK_RULES``)."""
    reasons: list[str] = []
    if e.late_payments_recent >= policy.late_payments or e.overdue_open > 0:
        reasons.append("late_payments")
    dropped = (
        e.engagement_before >= policy.engagement_min_before
        and Decimal(e.engagement_recent) < Decimal(e.engagement_before) * policy.engagement_drop_share
    )
    if dropped or e.unsubscribed_recent:
        reasons.append("engagement_drop")
    if e.complaints_recent > 0:
        reasons.append("complaints")
    if e.hours_used is not None and e.hours_included and e.hours_used < e.hours_included * policy.underused_share:
        reasons.append("hours_underused")
    if e.price_increase_at is not None and now < e.price_increase_at <= now + timedelta(days=policy.price_notice_days):
        reasons.append("price_increase_ahead")
    return reasons


# --------------------------------------------------------------------------- loyalty


def loyalty_points(amount: Decimal, per_unit: Decimal) -> int:
    """Points for a paid invoice: ``per_unit`` points per currency unit, rounded down."""
    return max(0, int((amount * per_unit).to_integral_value(rounding=ROUND_FLOOR)))


# --------------------------------------------------------------------------- economics over a period


@dataclass(frozen=True)
class Movement:
    """One change of MRR. ``logo`` is +1 when the client starts paying or being paused (a
    client), -1 when its last running subscription ends (churned), else 0."""

    lead_id: Any
    at: datetime
    kind: str
    amount: Decimal
    currency: str
    logo: int = 0


@dataclass(frozen=True)
class LeadFacts:
    lead_id: Any
    channel: str | None
    captured_at: datetime | None
    qualified_at: datetime | None = None
    proposed_at: datetime | None = None
    won_at: datetime | None = None
    client_at: datetime | None = None
    tier: str | None = None


@dataclass(frozen=True)
class Spend:
    channel: str
    start: date
    end: date  # inclusive, as a marketing report states it
    amount: Decimal
    currency: str


_SIGN = {"new": 1, "expansion": 1, "resume": 1, "contraction": -1, "churn": -1, "pause": -1}
_RATE = Decimal("0.0001")
_MONTH = Decimal("0.01")


def ratio(numerator: Decimal | int, denominator: Decimal | int, places: Decimal = _RATE) -> Decimal | None:
    """numerator / denominator rounded half up, or None when the denominator is 0."""
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(places, rounding=ROUND_HALF_UP)


def add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def months_between(start: datetime, end: datetime) -> Decimal:
    """Calendar months from ``start`` to ``end``: whole months plus the share of the next."""
    whole = 0
    while add_months(start, whole + 1) <= end:
        whole += 1
    here, after = add_months(start, whole), add_months(start, whole + 1)
    part = Decimal(str((end - here).total_seconds())) / Decimal(str((after - here).total_seconds()))
    return Decimal(whole) + part


def mrr_at(movements: Iterable[Movement], moment: datetime, currency: str) -> Decimal:
    """MRR just before ``moment`` (movements at ``moment`` belong to the period it starts)."""
    return sum(
        (_SIGN[m.kind] * m.amount for m in movements if m.at < moment and m.currency == currency), Decimal(0)
    )


def running_at(movements: Iterable[Movement], moment: datetime) -> bool:
    """A client (paying or paused) just before ``moment``."""
    return sum(m.logo for m in movements if m.at < moment) > 0


def spend_in(spends: Iterable[Spend], start: datetime, end: datetime, currency: str) -> Decimal:
    """Spend falling in [start, end), pro rata by day of each spend's own period."""
    total = Decimal(0)
    for s in spends:
        if s.currency != currency:
            continue
        s_start = datetime(s.start.year, s.start.month, s.start.day, tzinfo=timezone.utc)
        s_end = datetime(s.end.year, s.end.month, s.end.day, tzinfo=timezone.utc) + timedelta(days=1)
        overlap = (min(end, s_end) - max(start, s_start)).total_seconds()
        if overlap > 0:
            total += s.amount * Decimal(str(overlap)) / Decimal(str((s_end - s_start).total_seconds()))
    return quantize(total)


@dataclass(frozen=True)
class EconomicsInput:
    start: datetime
    end: datetime
    currency: str
    gross_margin: Decimal
    leads: list[LeadFacts]
    movements: list[Movement]  # every client's, every currency
    spends: list[Spend]
    leaked: list[tuple[datetime, Decimal, str]] = field(default_factory=list)
    exits: list[tuple[datetime, str]] = field(default_factory=list)


FUNNEL = ("leads", "qualified", "proposed", "won", "clients")


def economics(data: EconomicsInput) -> dict[str, Any]:
    """Every figure of the period [start, end) per DESIGN.md's formulas; a figure whose
    denominator is zero is None, and ``reasons`` says why."""
    start, end, cur = data.start, data.end, data.currency
    reasons: dict[str, str] = {}
    by_client: dict[Any, list[Movement]] = {}
    for m in sorted(data.movements, key=lambda m: m.at):
        by_client.setdefault(m.lead_id, []).append(m)

    def inside(moment: datetime | None) -> bool:
        return moment is not None and start <= moment < end

    cohort = [lead for lead in data.leads if inside(lead.captured_at)]
    stages = {
        "leads": len(cohort),
        "qualified": sum(1 for lead in cohort if lead.qualified_at),
        "proposed": sum(1 for lead in cohort if lead.proposed_at),
        "won": sum(1 for lead in cohort if lead.won_at),
        "clients": sum(1 for lead in cohort if lead.client_at),
    }
    funnel = []
    for i, stage in enumerate(FUNNEL):
        previous = stages[FUNNEL[i - 1]] if i else None
        funnel.append(
            {
                "stage": stage,
                "count": stages[stage],
                "from_previous": ratio(stages[stage], previous) if previous is not None else None,
                "from_leads": ratio(stages[stage], stages["leads"]),
            }
        )
    if not cohort:
        reasons["funnel"] = "no lead captured in the period"

    new_clients = sum(1 for lead in data.leads if inside(lead.client_at))
    spend = spend_in(data.spends, start, end, cur)
    cac = ratio(spend, new_clients, _MONTH)
    if cac is None:
        reasons["cac"] = "no new client in the period"

    at_start = {c for c, ms in by_client.items() if running_at(ms, start)}
    at_end = {c for c, ms in by_client.items() if running_at(ms, end)}
    lost = at_start - at_end
    churn_rate = ratio(len(lost), len(at_start))
    months = months_between(start, end)
    monthly_churn = (
        (Decimal(len(lost)) / Decimal(len(at_start)) / months).quantize(_RATE, rounding=ROUND_HALF_UP)
        if at_start
        else None
    )
    if churn_rate is None:
        reasons["logo_churn"] = "no client at the start of the period"

    mrr_start = mrr_at(data.movements, start, cur)
    mrr_end = mrr_at(data.movements, end, cur)
    moves = {kind: Decimal(0) for kind in MOVEMENT_KINDS}
    from_start = {kind: Decimal(0) for kind in MOVEMENT_KINDS}
    for m in data.movements:
        if m.currency == cur and start <= m.at < end:
            moves[m.kind] += m.amount
            if m.lead_id in at_start:
                from_start[m.kind] += m.amount
    nrr = ratio(mrr_start + from_start["expansion"] - from_start["contraction"] - from_start["churn"], mrr_start)
    grr = ratio(mrr_start - from_start["contraction"] - from_start["churn"], mrr_start)
    revenue_churn = ratio(from_start["contraction"] + from_start["churn"], mrr_start)
    if mrr_start == 0:
        reasons["nrr"] = reasons["grr"] = reasons["revenue_churn"] = f"no {cur} MRR at the start of the period"

    paying = [c for c, ms in by_client.items() if mrr_at(ms, end, cur) > 0]
    arpa = ratio(mrr_end, len(paying), _MONTH)
    if arpa is None:
        reasons["arpa"] = f"no client paying {cur} MRR at the end of the period"
    ltv = None
    if arpa is not None and monthly_churn:
        ltv = quantize(arpa * data.gross_margin / monthly_churn)
    elif arpa is not None:
        reasons["ltv"] = "no client lost in the period: lifetime value is unbounded"
    else:
        reasons["ltv"] = reasons["arpa"]
    ltv_cac = ratio(ltv, cac, _MONTH) if ltv is not None and cac else None
    if ltv_cac is None:
        reasons["ltv_cac"] = "needs both LTV and CAC"
    payback = ratio(cac, arpa * data.gross_margin, _MONTH) if cac is not None and arpa else None
    if payback is None:
        reasons["payback_months"] = "needs both CAC and ARPA"

    tiers = {lead.lead_id: lead.tier for lead in data.leads}
    fire = sum(1 for c in at_end if tiers.get(c) == "fire")
    fire_share = ratio(fire, len(at_end))
    leaked = quantize(sum((a for t, a, c in data.leaked if c == cur and start <= t < end), Decimal(0)))
    exits: dict[str, int] = {}
    for moment, reason in data.exits:
        if start <= moment < end:
            exits[reason] = exits.get(reason, 0) + 1
    return {
        "leads": stages["leads"],
        "funnel": funnel,
        "new_clients": new_clients,
        "spend": spend,
        "cac": cac,
        "clients_at_start": len(at_start),
        "clients_at_end": len(at_end),
        "clients_lost": len(lost),
        "logo_churn": churn_rate,
        "monthly_logo_churn": monthly_churn,
        "months": months.quantize(_RATE, rounding=ROUND_HALF_UP),
        "mrr_start": mrr_start,
        "mrr_end": mrr_end,
        "mrr_movements": moves,
        "nrr": nrr,
        "grr": grr,
        "revenue_churn": revenue_churn,
        "arpa": arpa,
        "ltv": ltv,
        "ltv_cac": ltv_cac,
        "payback_months": payback,
        "fire_clients": fire,
        "fire_share": fire_share,
        "leaked_revenue": leaked,
        "exit_reasons": dict(sorted(exits.items())),
        "cohorts": cohort_table(by_client, end=end, start=start),
        "reasons": reasons,
    }


def cohort_table(by_client: Mapping[Any, list[Movement]], *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Retention by acquisition month (the month a client first subscribed, from ``start``'s
    month on): for each month after, the share still a client (paused counts) at its end.
    Only months that have ended by ``end`` are shown."""
    first_month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    groups: dict[datetime, list[list[Movement]]] = {}
    for ms in by_client.values():
        joined = next((m.at for m in ms if m.logo > 0), None)
        if joined is None:
            continue
        month = joined.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if first_month <= month < end:
            groups.setdefault(month, []).append(ms)
    rows = []
    for month in sorted(groups):
        members = groups[month]
        shares = []
        k = 1
        while add_months(month, k) <= end:
            moment = add_months(month, k)
            shares.append(ratio(sum(1 for ms in members if running_at(ms, moment)), len(members)))
            k += 1
        rows.append({"cohort": f"{month.year}-{month.month:02d}", "clients": len(members), "retention": shares})
    return rows

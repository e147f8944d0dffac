"""Pure rules of acquisition and sales: ICP fit, red flags, deposit share, funnel stages.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

INBOUND_CHANNELS = frozenset({"website", "seo", "content", "social", "email", "referral", "event"})
OUTBOUND_CHANNELS = frozenset(
    {"cold_call", "cold_email", "paid_ads", "networking", "direct_mail", "tender"}
)
CHANNELS = INBOUND_CHANNELS | OUTBOUND_CHANNELS

RED_FLAGS = (
    "one_off_project",
    "no_written_brief",
    "no_defined_budget",
    "no_marketing_experience",
    "no_research",
    "must_be_fast",
    "refuses_deposit",
    "changes_mind_often",
    "boss_reverses_direction",
)

_RUSH = re.compile(r"\b(asap|a\.s\.a\.p|urgent|urgently|yesterday|immediately|right away|rush|this week)\b|as soon as possible", re.I)
_ONE_OFF = re.compile(r"\b(one[- ]?off|one[- ]?time|single project|just once)\b", re.I)

DECISION_MAKER_TITLES = re.compile(
    r"\b(founder|co-?founder|owner|ceo|cto|cmo|coo|cfo|chief|president|director|head of|vp|vice president|partner|managing)\b",
    re.I,
)


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


@dataclass(frozen=True)
class RedFlag:
    name: str
    evidence: str


def intake_red_flags(intake: Intake) -> list[RedFlag]:
    """Red flags visible at intake, each with the evidence that raised it."""
    flags: list[RedFlag] = []
    if not (intake.brief and intake.brief.strip()):
        flags.append(RedFlag("no_written_brief", "no brief was given"))
    if intake.budget is None or intake.budget <= 0:
        flags.append(RedFlag("no_defined_budget", "no budget was stated"))
    if intake.timeline and _RUSH.search(intake.timeline):
        flags.append(RedFlag("must_be_fast", f"timeline: {intake.timeline!r}"))
    texts = " ".join(filter(None, [intake.brief, intake.timeline, *intake.needs]))
    if _ONE_OFF.search(texts):
        flags.append(RedFlag("one_off_project", "described as a one-off"))
    return flags


@dataclass(frozen=True)
class Criterion:
    name: str
    weight: int
    values: tuple[str, ...] = ()
    minimum: Decimal | None = None
    maximum: Decimal | None = None


@dataclass(frozen=True)
class IdealClientProfile:
    """Weighted criteria; a lead's fit is the share of weight it matches, 0-100."""

    criteria: tuple[Criterion, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdealClientProfile:
        criteria = []
        for name, spec in data.get("criteria", {}).items():
            criteria.append(
                Criterion(
                    name=name,
                    weight=int(spec.get("weight", 1)),
                    values=tuple(str(v).lower() for v in spec.get("values", ())),
                    minimum=Decimal(str(spec["min"])) if spec.get("min") is not None else None,
                    maximum=Decimal(str(spec["max"])) if spec.get("max") is not None else None,
                )
            )
        if not criteria:
            raise ValueError("an ICP needs at least one criterion")
        return cls(tuple(criteria))


DEFAULT_ICP = IdealClientProfile.from_dict(
    {
        "criteria": {
            "industry": {"weight": 20, "values": ["saas", "software", "ecommerce", "fintech", "healthcare", "professional services"]},
            "employees": {"weight": 15, "min": 10, "max": 500},
            "annual_revenue": {"weight": 15, "min": 1000000},
            "country": {"weight": 10, "values": ["US", "GB", "DE", "NL", "CA", "AU", "IE", "SE", "DK", "BD", "IR"]},
            "decision_maker": {"weight": 15},
            "needs": {"weight": 10, "values": ["seo", "content", "paid ads", "website", "branding", "marketing", "growth"]},
            "budget": {"weight": 15, "min": 3000},
        }
    }
)


@dataclass(frozen=True)
class Fit:
    score: int
    matched: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def fit_score(intake: Intake, icp: IdealClientProfile = DEFAULT_ICP) -> Fit:
    total = sum(c.weight for c in icp.criteria)
    got = 0
    matched: list[str] = []
    missed: list[str] = []
    for criterion in icp.criteria:
        if _matches(criterion, intake):
            got += criterion.weight
            matched.append(criterion.name)
        else:
            missed.append(criterion.name)
    return Fit(round(100 * got / total) if total else 0, matched, missed)


def _in_range(value: Decimal | int | None, c: Criterion) -> bool:
    if value is None:
        return False
    value = Decimal(value)
    return (c.minimum is None or value >= c.minimum) and (c.maximum is None or value <= c.maximum)


def _matches(c: Criterion, intake: Intake) -> bool:
    match c.name:
        case "industry":
            return bool(intake.industry) and intake.industry.lower() in c.values
        case "country":
            return bool(intake.country) and intake.country.lower() in c.values
        case "employees":
            return _in_range(intake.employees, c)
        case "annual_revenue":
            return _in_range(intake.annual_revenue, c)
        case "budget":
            return _in_range(intake.budget, c)
        case "decision_maker":
            return bool(intake.job_title and DECISION_MAKER_TITLES.search(intake.job_title))
        case "needs":
            return any(need.lower() in c.values for need in intake.needs)
        case _:
            return False


def deposit_share(
    red_flags: list[str],
    fit: int,
    *,
    base: Decimal,
    per_flag: Decimal,
    maximum: Decimal,
    low_fit_extra: Decimal,
    low_fit_threshold: int,
    tier: str | None = None,
) -> Decimal:
    """More risk asks a larger deposit: each red flag, a poor fit or a bad tier adds to it."""
    share = base + per_flag * len(set(red_flags))
    if fit < low_fit_threshold:
        share += low_fit_extra
    if tier == "fire":
        share = maximum
    elif tier == "best":
        share -= per_flag
    return min(max(share, Decimal("0.10")), maximum).quantize(Decimal("0.01"))


# Events that move a lead forward (or back) in the funnel, and where to.
STAGE_ON_EVENT = {
    "lead.sales_ready": "consideration",
    "deal.proposed": "decision",
    "deposit.cleared": "action",
    "cancellation.completed": "churned",
    "referral.made": "advocacy",
}


def next_stage(current: str, cause: str) -> str | None:
    """The stage ``cause`` moves a lead to, or None when it does not move it."""
    target = STAGE_ON_EVENT.get(cause)
    if target is None or target == current:
        return None
    order = ["awareness", "interest", "consideration", "decision", "action", "retention", "advocacy"]
    # Engagement never drags a client back down the funnel; churn and returns do move backwards.
    if cause in ("lead.sales_ready", "deal.proposed") and current in order and order.index(current) >= order.index(target):
        return None
    if cause == "referral.made" and current not in ("action", "retention"):
        return None
    return target


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_domain(email: str) -> str:
    return normalise_email(email).rsplit("@", 1)[-1]


FREE_MAIL = frozenset({"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "proton.me", "protonmail.com", "aol.com", "gmx.com", "mail.com"})

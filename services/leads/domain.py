"""Pure rules of acquisition and sales: ICP fit, red flags, dedupe keys, BANT, engagement decay,
funnel stages and conversion, deposit share and change-request scope.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import yaml

from shared import safe_yaml

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

_RUSH = re.compile(
    r"\b(asap|a\.s\.a\.p|urgent|urgently|yesterday|immediately|right away|rush|this week|tomorrow)\b"
    r"|as soon as possible|as fast as possible|as quickly as possible",
    re.I,
)
_ONE_OFF = re.compile(r"\b(one[- ]?off|one[- ]?time|single project|just once|only once)\b", re.I)
_NO_EXPERIENCE = re.compile(
    r"\b(never (done|did|tried|run|ran) (any )?marketing|no marketing experience|first time (doing |trying )?marketing"
    r"|new to marketing|never marketed|no idea how marketing works)\b",
    re.I,
)
_NO_RESEARCH = re.compile(
    r"\b(not sure what we (need|want)|don'?t know what we (need|want)|no idea what we (need|want)"
    r"|whatever you (think|suggest)|just make it (good|nice|pop)|tell us what we need)\b",
    re.I,
)

DECISION_MAKER_TITLES = re.compile(
    r"\b(founder|co-?founder|owner|ceo|cto|cmo|coo|cfo|chief|president|director|head of|vp|vice president"
    r"|partner|managing|proprietor|principal|general manager|gm)\b",
    re.I,
)


# --------------------------------------------------------------------------- intake


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
        flags.append(RedFlag("no_written_brief", "no written brief was given"))
    if intake.budget is None or intake.budget <= 0:
        flags.append(RedFlag("no_defined_budget", "no budget was stated"))
    if intake.timeline and _RUSH.search(intake.timeline):
        flags.append(RedFlag("must_be_fast", f"timeline: {intake.timeline!r}"))
    texts = " ".join(filter(None, [intake.brief, intake.timeline, *intake.needs]))
    if m := _ONE_OFF.search(texts):
        flags.append(RedFlag("one_off_project", f"described as {m.group(0)!r}"))
    if m := _NO_EXPERIENCE.search(texts):
        flags.append(RedFlag("no_marketing_experience", f"said {m.group(0)!r}"))
    if m := _NO_RESEARCH.search(texts):
        flags.append(RedFlag("no_research", f"said {m.group(0)!r}"))
    return flags


def add_flag(flags: list[dict[str, Any]], name: str, evidence: str, *, source: str, at: datetime) -> list[dict[str, Any]] | None:
    """The flag list with ``name`` raised, or None when it is already raised (evidence is kept)."""
    if name not in RED_FLAGS:
        raise ValueError(f"unknown red flag {name!r}; known: {', '.join(RED_FLAGS)}")
    if any(f["name"] == name for f in flags):
        return None
    return [*flags, {"name": name, "evidence": evidence, "source": source, "at": at.isoformat()}]


# --------------------------------------------------------------------------- dedupe

FREE_MAIL = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com", "icloud.com",
        "me.com", "proton.me", "protonmail.com", "aol.com", "gmx.com", "gmx.de", "mail.com", "yandex.ru",
        "web.de", "msn.com", "hey.com", "fastmail.com", "zoho.com",
    }
)


def normalise_email(email: str) -> str:
    """The dedupe key of an address: lower case, no ``+tag``; Gmail also ignores dots."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        domain = "gmail.com"
        local = local.replace(".", "")
    return f"{local}@{domain}"


def normalise_name(name: str) -> str:
    """Names compared for dedupe: case, spacing and punctuation do not count."""
    return " ".join(re.findall(r"\w+", name.casefold()))


def email_domain(email: str) -> str:
    return email.strip().lower().rsplit("@", 1)[-1]


def company_domain(email: str) -> str | None:
    """The company's domain from a work address; free-mail addresses say nothing of a company."""
    domain = email_domain(email)
    if domain.startswith("www."):
        domain = domain[4:]
    return None if domain in FREE_MAIL else domain


# --------------------------------------------------------------------------- ICP

CRITERIA = ("industry", "employees", "annual_revenue", "country", "decision_maker", "pains", "needs", "budget")


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
    def from_dict(cls, data: Any) -> IdealClientProfile:
        """Validate an ICP document; a ``ValueError`` says exactly what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("criteria"), dict):
            raise ValueError("an ICP is a mapping with a 'criteria' mapping of name -> {weight, values | min/max}")
        criteria = []
        for name, spec in data["criteria"].items():
            if name not in CRITERIA:
                raise ValueError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
            spec = spec or {}
            if not isinstance(spec, dict):
                raise ValueError(f"criterion {name!r} must be a mapping")
            weight = spec.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ValueError(f"criterion {name!r}: weight must be a whole number >= 0")
            values = spec.get("values", ())
            if isinstance(values, str) or not isinstance(values, list | tuple):
                raise ValueError(f"criterion {name!r}: values must be a list")
            try:
                low = Decimal(str(spec["min"])) if spec.get("min") is not None else None
                high = Decimal(str(spec["max"])) if spec.get("max") is not None else None
            except ArithmeticError as exc:
                raise ValueError(f"criterion {name!r}: min and max must be numbers") from exc
            if low is not None and high is not None and low > high:
                raise ValueError(f"criterion {name!r}: min {low} is above max {high}")
            if name in ("industry", "country", "pains", "needs") and not values:
                raise ValueError(f"criterion {name!r} needs a list of values")
            if name in ("employees", "annual_revenue", "budget") and low is None and high is None:
                raise ValueError(f"criterion {name!r} needs min or max")
            criteria.append(
                Criterion(name=name, weight=weight, values=tuple(str(v).lower() for v in values), minimum=low, maximum=high)
            )
        if not criteria or sum(c.weight for c in criteria) == 0:
            raise ValueError("an ICP needs at least one criterion with a weight above 0")
        return cls(tuple(criteria))

    @classmethod
    def from_yaml(cls, text: str) -> IdealClientProfile:
        try:
            data = safe_yaml.load(text)
        except safe_yaml.UnsafeYaml as exc:
            raise ValueError(f"YAML refused: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {exc}") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.criteria:
            spec: dict[str, Any] = {"weight": c.weight}
            if c.values:
                spec["values"] = list(c.values)
            if c.minimum is not None:
                spec["min"] = int(c.minimum) if c.minimum == c.minimum.to_integral() else str(c.minimum)
            if c.maximum is not None:
                spec["max"] = int(c.maximum) if c.maximum == c.maximum.to_integral() else str(c.maximum)
            out[c.name] = spec
        return {"criteria": out}


DEFAULT_ICP_YAML = """\
# The ideal client profile: weighted criteria; fit = matched weight / total weight x 100.
criteria:
  industry:
    weight: 20
    values: [saas, software, ecommerce, fintech, healthcare, professional services]
  employees:
    weight: 15
    min: 10
    max: 500
  annual_revenue:
    weight: 15
    min: 1000000
  country:
    weight: 10
    values: [US, GB, DE, NL, CA, AU, IE, SE, DK, FR]
  decision_maker:
    weight: 15
  pains:
    weight: 10
    values: [seo, content, paid ads, website, branding, marketing, growth, leads, conversion]
  budget:
    weight: 15
    min: 3000
"""
DEFAULT_ICP = IdealClientProfile.from_yaml(DEFAULT_ICP_YAML)


@functools.lru_cache(maxsize=16)
def parsed_icp(document: str) -> IdealClientProfile:
    """The profile of a stored ICP document. Profiles are immutable, so one parse serves every
    capture: parsing the YAML on each capture was most of the cost of ``POST /leads``."""
    return IdealClientProfile.from_yaml(document)


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


def is_decision_maker(job_title: str | None) -> bool:
    return bool(job_title and DECISION_MAKER_TITLES.search(job_title))


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
            return is_decision_maker(intake.job_title)
        case "needs" | "pains":
            # A pain matches when a listed value appears in what they said they need or wrote.
            said = " ".join([*intake.needs, intake.brief or ""]).lower()
            return any(re.search(rf"\b{re.escape(v)}\b", said) for v in c.values)
        case _:
            return False


# --------------------------------------------------------------------------- qualification


@dataclass(frozen=True)
class Bant:
    budget: bool
    authority: bool
    need: bool
    timeline: bool


def suggested_bant(intake: Intake, *, minimum_budget: Decimal) -> Bant:
    """What the intake already says about BANT (sales confirms or overrides each answer)."""
    return Bant(
        budget=intake.budget is not None and intake.budget >= minimum_budget,
        authority=is_decision_maker(intake.job_title),
        need=bool(intake.needs) or bool(intake.brief and intake.brief.strip()),
        timeline=bool(intake.timeline and intake.timeline.strip()),
    )


@dataclass(frozen=True)
class Qualification:
    qualified: bool
    missing: list[str]
    reasons: list[str]


def qualify(bant: Bant, *, required: int, extra_reasons: Iterable[str] = ()) -> Qualification:
    """BANT: no need is always a no; otherwise ``required`` of the four must hold. Reasons given
    by sales (spam, competitor...) disqualify whatever the four say."""
    missing = [name for name in ("budget", "authority", "need", "timeline") if not getattr(bant, name)]
    extra = [r.strip() for r in extra_reasons if r and r.strip()]
    met = 4 - len(missing)
    ok = not extra and bant.need and met >= required
    reasons = [] if ok else [*extra, *(f"no_{name}" for name in missing)]
    return Qualification(ok, missing, reasons)


# --------------------------------------------------------------------------- engagement

ENGAGEMENT_CAP = Decimal(100)


def decayed(points: Decimal, *, since: datetime | None, now: datetime, half_life_days: float) -> Decimal:
    """Engagement points fade: half of them are gone after ``half_life_days``."""
    if since is None or points <= 0:
        return max(points, Decimal(0))
    days = (now - since).total_seconds() / 86400
    if days <= 0:
        return points
    factor = Decimal(repr(math.pow(0.5, days / half_life_days)))
    return (points * factor).quantize(Decimal("0.0001"))


def engage(
    points: Decimal, *, since: datetime | None, at: datetime, weight: Decimal, half_life_days: float
) -> tuple[Decimal, datetime]:
    """Add ``weight`` points happening ``at``; returns the new points and their reference time.
    An event older than the reference (out of order) counts for what is left of it now."""
    if since is None or at >= since:
        base = decayed(points, since=since, now=at, half_life_days=half_life_days)
        return min(base + weight, ENGAGEMENT_CAP), at
    late = decayed(weight, since=at, now=since, half_life_days=half_life_days)
    return min(points + late, ENGAGEMENT_CAP), since


def engagement_score(points: Decimal, *, since: datetime | None, now: datetime, half_life_days: float) -> int:
    value = decayed(points, since=since, now=now, half_life_days=half_life_days)
    return int(min(value, ENGAGEMENT_CAP).to_integral_value())


# --------------------------------------------------------------------------- funnel

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
_FORWARD_ONLY = {"email.clicked", "email.replied", "feedback.received", "lead.sales_ready", "lead.qualified", "deal.proposed"}


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
        for a, b in zip(ORDER, ORDER[1:], strict=False):
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


# --------------------------------------------------------------------------- deals


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
    elif tier == "tolerable":
        share += per_flag
    elif tier == "best":
        share -= per_flag
    return min(max(share, Decimal("0.10")), maximum).quantize(Decimal("0.01"))


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "the a an and or of to for on in at with by from our your their we you it this that these those is are be "
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
    matched = line
    if matched is None:
        wanted = _tokens(description)
        best, score = None, 0.0
        for i, scope_line in enumerate(lines):
            have = _tokens(str(scope_line.get("description", "")))
            if not wanted or not have:
                continue
            overlap = len(wanted & have) / min(len(wanted), len(have))
            if overlap > score:
                best, score = i, overlap
        matched = best if score >= 0.5 else None
    reason: str
    if in_scope is None:
        if matched is None:
            in_scope, reason = False, "matches no line of the estimate"
        else:
            planned = lines[matched].get("hours")
            left = None if planned is None else Decimal(str(planned)) - used_hours.get(matched, Decimal(0))
            if hours is not None and left is not None and hours > left:
                in_scope, reason = False, f"line {matched} has {max(left, Decimal(0))} hours left, the change needs {hours}"
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

"""ICP fit: how well a lead matches the ideal client profile, 0-100 (kept apart from
engagement), and the segment nurture enrolls them by."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from services.leads.domain.intake import Intake
from shared import safe_yaml

CRITERIA = ("industry", "employees", "annual_revenue", "country", "decision_maker", "pains", "needs", "budget")

DECISION_MAKER_TITLES = re.compile(
    r"\b(founder|co-?founder|owner|ceo|cto|cmo|coo|cfo|chief|president|director|head of|vp|vice president"
    r"|partner|managing|proprietor|principal|general manager|gm)\b",
    re.I,
)

# A lead fitting the ICP this well is in the ``ideal`` segment (``lead.captured``'s ``segment``:
# nurture picks sequences by it and treats the person as high value); any other is ``default``.
IDEAL_FIT = 60


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
        criteria = [_criterion(name, spec) for name, spec in data["criteria"].items()]
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


def _criterion(name: str, spec: Any) -> Criterion:
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
    return Criterion(name=name, weight=weight, values=tuple(str(v).lower() for v in values), minimum=low, maximum=high)


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
    """The share of the profile's weight the intake matches, with the criteria matched and missed."""
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


def segment(fit: int) -> str:
    """``ideal`` from a fit of ``IDEAL_FIT``, else ``default``."""
    return "ideal" if fit >= IDEAL_FIT else "default"


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
            return bool(intake.industry and intake.industry.lower() in c.values)
        case "country":
            return bool(intake.country and intake.country.lower() in c.values)
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

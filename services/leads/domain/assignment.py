"""Who gets a new lead: the agency's assignment rules, as data an admin edits.

The order, as a sales manager would set it up in HubSpot or Pipedrive:

1. **Who may own leads at all**: active people with role ``sales`` and a capacity above zero.
2. **Language first**: a lead who writes in Bengali or Persian goes to someone who speaks it,
   if anyone eligible does (an English lead is not limited to English speakers unless some
   rep lists languages and English is among them).
3. **Rules**: the first rule whose conditions (channel, country, language) all match the lead
   and that names at least one person still in the running narrows the choice to its people
   (a tender desk for ``tender`` leads, a territory for ``BD``/``IR``).
4. **Weighted round-robin**: the person with the most room left, measured as open leads per
   unit of capacity (a rep with capacity 2 takes two for every one of a rep with capacity 1);
   ties go to whoever was given a lead longest ago, then by id, so the choice is repeatable.

Pure: the caller reads the people, their open leads and the rules; nothing here does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.business_hours import BusinessHours

OWNER_ROLES = ("sales", "success", "admin")  # who may own a lead or a client
ASSIGNED_ROLES = ("sales",)  # who the rules hand new leads to
MAX_RULES = 200


class RuleMatch(BaseModel):
    """A rule's conditions; an empty list matches anything."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(default_factory=list, max_length=50, description="lead channels, e.g. tender")
    countries: list[str] = Field(
        default_factory=list, max_length=300, description="ISO 3166-1 alpha-2 codes: the territory"
    )
    languages: list[str] = Field(default_factory=list, max_length=50, description="ISO 639-1 codes")

    @field_validator("countries")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [c.upper() for c in value]

    def matches(self, lead: LeadFacts) -> bool:
        return (
            (not self.channels or lead.channel in self.channels)
            and (not self.countries or (lead.country or "").upper() in self.countries)
            and (not self.languages or lead.language in self.languages)
        )


class AssignmentRule(BaseModel):
    """Leads that match go to these people (weighted round-robin among them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    match: RuleMatch = Field(default_factory=RuleMatch)
    people: list[uuid.UUID] = Field(min_length=1, max_length=100, description="person ids, each with role sales")


class AssignmentRules(BaseModel):
    """The whole rule book, replaced as one (``PUT /assignment/rules``)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[AssignmentRule] = Field(default_factory=list, max_length=MAX_RULES)
    by_language: bool = Field(default=True, description="a lead goes to someone who speaks its language first")


@dataclass(frozen=True)
class LeadFacts:
    channel: str
    country: str | None
    language: str


@dataclass(frozen=True)
class Rep:
    """A person who may be given leads, with what the choice needs to know."""

    person_id: uuid.UUID
    role: str
    active: bool
    languages: tuple[str, ...]
    capacity: int
    open_leads: int = 0
    last_assigned_at: datetime | None = None
    # Breaks the last ties the same way every time (ids are random; e-mails are the team's own).
    email: str = ""

    @property
    def eligible(self) -> bool:
        return self.active and self.role in ASSIGNED_ROLES and self.capacity > 0


@dataclass(frozen=True)
class Choice:
    person_id: uuid.UUID | None
    reason: str


def rule_problems(rules: AssignmentRules, people: dict[uuid.UUID, Rep]) -> list[tuple[str, str]]:
    """What is wrong with a rule book, as (field, message) pairs: a rule naming someone unknown,
    disabled or not in sales, or matching nobody who could take the lead."""
    problems: list[tuple[str, str]] = []
    for n, rule in enumerate(rules.rules):
        for m, person_id in enumerate(rule.people):
            rep = people.get(person_id)
            where = f"rules[{n}].people[{m}]"
            if rep is None:
                problems.append((where, f"no person {person_id}"))
            elif not rep.active:
                problems.append((where, f"{person_id} is disabled"))
            elif rep.role not in ASSIGNED_ROLES:
                problems.append((where, f"{person_id} has role {rep.role}; leads are assigned to sales"))
        if not any(people.get(p) is not None and people[p].eligible for p in rule.people):
            problems.append((f"rules[{n}]", f"rule {rule.name!r} names nobody who can take a lead"))
    return problems


def choose(lead: LeadFacts, reps: Iterable[Rep], rules: AssignmentRules) -> Choice:
    """The owner of a new lead, or none (nobody eligible: the lead waits in the pool)."""
    running = [r for r in reps if r.eligible]
    if not running:
        return Choice(None, "nobody in sales with capacity")
    reasons: list[str] = []
    if rules.by_language:
        speakers = [r for r in running if lead.language in r.languages]
        if speakers and len(speakers) < len(running):
            running = speakers
            reasons.append(f"speaks {lead.language}")
    for rule in rules.rules:
        if rule.match.matches(lead):
            named = set(rule.people)
            narrowed = [r for r in running if r.person_id in named]
            if narrowed:
                running = narrowed
                reasons.append(f"rule {rule.name!r}")
                break
    chosen = least_loaded(running)
    reasons.append("round-robin by capacity")
    return Choice(chosen.person_id, ", ".join(reasons))


def least_loaded(reps: Sequence[Rep]) -> Rep:
    """Open leads per unit of capacity, lowest first; then the longest since a lead, then the
    e-mail address, then id."""
    epoch = datetime.min

    def load(rep: Rep) -> tuple[Fraction, datetime, str, str]:
        last = rep.last_assigned_at.replace(tzinfo=None) if rep.last_assigned_at else epoch
        return Fraction(rep.open_leads, rep.capacity), last, rep.email, str(rep.person_id)

    return min(reps, key=load)


def may_own(role: str, active: bool) -> str | None:
    """Why this person may not own a lead or client, or None if they may."""
    if not active:
        return "is disabled"
    if role not in OWNER_ROLES:
        return f"has role {role}; an owner has role sales, success or admin"
    return None


class SalesPolicy(BaseModel):
    """The sales department's clock (``LEADS_SALES_*``): working hours in each lead's own zone,
    and the deadlines counted in them."""

    first_touch_hours: float = Field(default=4.0, ge=0, le=1000, description="business hours to reach a new lead")
    escalation_due_hours: float = Field(
        default=1.0, ge=0, le=1000, description="an admin's time to act on an overdue lead"
    )
    next_step_due_hours: float = Field(
        default=24.0, ge=0, le=10000, description="a next step without a date is due after"
    )
    handoff_due_hours: float = Field(
        default=8.0, ge=0, le=1000, description="the account owner's time to greet a new client"
    )
    tender_reminder_hours: float = Field(
        default=16.0, ge=0, le=10000, description="remind this long before a tender's deadline"
    )
    deposit_overdue_days: int = Field(
        default=7, ge=0, le=3650, description="days after its due date an unpaid deposit raises refuses_deposit"
    )
    workday_start: int = Field(default=9, ge=0, le=23, description="local hour the working day starts")
    workday_end: int = Field(default=17, ge=1, le=24, description="local hour it ends")
    workdays: tuple[int, ...] = Field(default=(0, 1, 2, 3, 4), description="working weekdays, 0 = Monday")

    def business_hours(self) -> BusinessHours:
        end = time(23, 59, 59, 999999) if self.workday_end == 24 else time(self.workday_end)
        return BusinessHours(start=time(self.workday_start), end=end, days=self.workdays)

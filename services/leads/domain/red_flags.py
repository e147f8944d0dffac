"""Red flags: the signals that a client will be hard work, each raised with its evidence."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.leads.domain.intake import Intake

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


def add_flag(
    flags: list[dict[str, Any]], name: str, evidence: str, *, source: str, at: datetime
) -> list[dict[str, Any]] | None:
    """The flag list with ``name`` raised, or None when it is already raised (evidence is kept)."""
    if name not in RED_FLAGS:
        raise ValueError(f"unknown red flag {name!r}; known: {', '.join(RED_FLAGS)}")
    if any(f["name"] == name for f in flags):
        return None
    return [*flags, {"name": name, "evidence": evidence, "source": source, "at": at.isoformat()}]


def changes_mind_often(change_requests: int, *, after: int) -> bool:
    """A client who asked for ``after`` or more changes on one deal changes their mind often."""
    return change_requests >= after

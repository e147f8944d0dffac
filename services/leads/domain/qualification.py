"""BANT qualification: budget, authority, need, timeline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.leads.domain.fit import is_decision_maker
from services.leads.domain.intake import Intake


@dataclass(frozen=True)
class Bant:
    budget: bool
    authority: bool
    need: bool
    timeline: bool


@dataclass(frozen=True)
class Qualification:
    qualified: bool
    missing: list[str]
    reasons: list[str]


def suggested_bant(intake: Intake, *, minimum_budget: Decimal) -> Bant:
    """What the intake already says about BANT (sales confirms or overrides each answer)."""
    return Bant(
        budget=intake.budget is not None and intake.budget >= minimum_budget,
        authority=is_decision_maker(intake.job_title),
        need=bool(intake.needs) or bool(intake.brief and intake.brief.strip()),
        timeline=bool(intake.timeline and intake.timeline.strip()),
    )


def answered(
    suggested: Bant, *, budget: bool | None, authority: bool | None, need: bool | None, timeline: bool | None
) -> Bant:
    """Sales' answers, each one left out (None) read from the intake's suggestion."""
    return Bant(
        budget=suggested.budget if budget is None else budget,
        authority=suggested.authority if authority is None else authority,
        need=suggested.need if need is None else need,
        timeline=suggested.timeline if timeline is None else timeline,
    )


def qualify(bant: Bant, *, required: int, extra_reasons: Iterable[str] = ()) -> Qualification:
    """BANT: no need is always a no; otherwise ``required`` of the four must hold. Reasons given
    by sales (spam, competitor...) disqualify whatever the four say."""
    missing = [name for name in ("budget", "authority", "need", "timeline") if not getattr(bant, name)]
    extra = [r.strip() for r in extra_reasons if r and r.strip()]
    met = 4 - len(missing)
    ok = not extra and bant.need and met >= required
    reasons = [] if ok else [*extra, *(f"no_{name}" for name in missing)]
    return Qualification(ok, missing, reasons)


class QualificationPolicy(BaseModel):
    """How many of the four must hold (need always must), and the budget that counts as one."""

    model_config = ConfigDict(frozen=True)

    required: int = Field(default=3, ge=1, le=4)
    minimum_budget: Decimal = Field(default=Decimal("1000"), ge=0)

    def suggest(self, intake: Intake) -> Bant:
        return suggested_bant(intake, minimum_budget=self.minimum_budget)

    def decide(self, bant: Bant, *, extra_reasons: Iterable[str] = ()) -> Qualification:
        return qualify(bant, required=self.required, extra_reasons=extra_reasons)

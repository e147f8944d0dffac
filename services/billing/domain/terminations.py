"""The final invoice of a relationship the agency ended (``client.terminated``).

What it covers, kept simple and explicit:

- **unbilled hours**: on each retainer, the hours of its last (current) period over the included
  ones, at the retainer's hourly rate (the included hours are paid by the fee, billed in advance);
- **work done to date** on each won project whose deposit cleared (work may start only then)
  and that was not written off: the part of the project's total not invoiced yet (deposit,
  milestones and final invoices count), one line per project.

Nothing unbilled, no final invoice. One invoice per currency: amounts are never converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.money import quantize

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class ProjectFacts:
    """A won project as the final invoice sees it."""

    title: str
    currency: str
    total: Decimal
    invoiced: Decimal
    cleared: bool
    written_off: bool


def work_done_to_date(project: ProjectFacts) -> Decimal:
    """What of a project the final invoice bills: its total less what was invoiced, for a
    project whose deposit cleared and that was not written off; else nothing."""
    if not project.cleared or project.written_off:
        return ZERO
    return max(quantize(project.total) - quantize(project.invoiced), ZERO)


def work_done_text(title: str) -> str:
    return f"Work done to date: {title}"[:500]


def termination_reason(reason: str) -> str:
    """The reason a subscription ended by a termination carries (``terminated:<reason>``)."""
    return f"terminated:{reason}"

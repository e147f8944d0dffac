"""Reliability scenarios: `make reliability` runs them in full and writes reports/reliability.md;
`make test` runs the short version (RELIABILITY_SCALE unset)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FULL = os.environ.get("RELIABILITY_SCALE") == "full"
REPORTS = Path(__file__).resolve().parents[2] / "reports"
# The short runs in `make test` go to one file per xdist worker, so workers never overwrite
# each other and never overwrite the full report.
REPORT = REPORTS / (
    "reliability.md" if FULL else f"reliability-short-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.md"
)


class Report:
    def __init__(self) -> None:
        self.sections: list[tuple[str, dict[str, object]]] = []

    def add(self, scenario: str, figures: dict[str, object]) -> None:
        self.sections.append((scenario, figures))

    def write(self) -> None:
        lines = [
            "# Clientflow reliability report",
            "",
            f"Scale: {'full' if FULL else 'short'}; written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} "
            f"by `{'make reliability' if FULL else 'make test'}` on the embedded broker and "
            f"{'PostgreSQL' if os.environ.get('TEST_DATABASE_URL') else 'SQLite'}.",
            "",
        ]
        for scenario, figures in self.sections:
            lines += [f"## {scenario}", "", "| figure | value |", "|---|---|"]
            lines += [f"| {name} | {value} |" for name, value in figures.items()]
            lines.append("")
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text("\n".join(lines))


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    collected = Report()
    yield collected
    if collected.sections:
        collected.write()


@pytest.fixture
def databases(database_factory) -> dict[str, str]:
    """One fresh database per service (PostgreSQL when TEST_DATABASE_URL is set, else SQLite)."""
    from tests.reliability.cluster import SERVICES

    return {service: database_factory(service) for service in SERVICES}

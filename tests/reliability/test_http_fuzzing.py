"""Scenario 5: HTTP fuzzing. Schemathesis generates requests from each service's live
/openapi.json (valid data and deliberately invalid data) and sends them, with the API key, to
the four services running as real processes on the real broker and database. No answer may be
a 5xx, and every answer must fit the document: its status declared, its body its schema."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.reliability.cluster import SERVICES, Cluster
from tests.reliability.conftest import FULL
from tests.support import API_KEY

pytestmark = pytest.mark.reliability

SEED = 20261130
# Examples per operation and generation mode: ~80 operations x 2 modes, within about 3 minutes in full.
EXAMPLES = 12 if FULL else 3
CHECKS = {
    "5xx": not_a_server_error,
    "schema violations": response_schema_conformance,
    "undeclared status codes": status_code_conformance,
}


@dataclass
class Findings:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def record(self, kind: str, operation: str, text: str) -> None:
        self.failures[kind] += 1
        if len(self.examples) < 30:
            self.examples.append(f"{kind} on {operation}: {text[:1200]}")


def fuzz(base_url: str, findings: Findings) -> None:
    """Every operation of the service's live document, valid then invalid data, a fixed seed."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(base_url, operation, mode, findings)
            except Unsatisfiable:
                # An operation without parameters or body has no invalid form: nothing to send.
                assert mode == GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # a generator that cannot build this operation's data
                findings.record("not generated", f"{operation.label} ({mode})", repr(exc))


def _fuzz_operation(base_url: str, operation, mode: GenerationMode, findings: Findings) -> None:  # noqa: ANN001
    auth = {"Authorization": f"Bearer {API_KEY}"}

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case) -> None:  # noqa: ANN001
        response = case.call(base_url=base_url, headers=auth, timeout=30)
        findings.requests += 1
        findings.statuses[response.status_code // 100 * 100] += 1
        for kind, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=auth)
            except FailureGroup as group:
                findings.record(kind, operation.label, "; ".join(str(f) for f in group.exceptions))

    one()


async def test_http_fuzzing(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    try:
        started = time.monotonic()
        per_service = {service: Findings() for service in SERVICES}
        for service in SERVICES:
            await asyncio.to_thread(fuzz, cluster.url(service), per_service[service])
        elapsed = time.monotonic() - started
        still_up = [s for s in SERVICES if cluster.of(s)[0].process.poll() is None]
    finally:
        await cluster.stop()
    total = Findings()
    for findings in per_service.values():
        total.requests += findings.requests
        total.statuses.update(findings.statuses)
        total.failures.update(findings.failures)
        total.examples += findings.examples
    figures: dict[str, object] = {
        "requests (all four services)": total.requests,
        **{f"requests to {s}": per_service[s].requests for s in SERVICES},
        "answers by class": ", ".join(f"{k // 100}xx: {v}" for k, v in sorted(total.statuses.items())),
        "5xx": total.failures["5xx"],
        "responses that break their schema": total.failures["schema violations"],
        "statuses the documents do not declare": total.failures["undeclared status codes"],
        "operations that could not be generated": total.failures["not generated"],
        "seed / examples per operation and mode": f"{SEED} / {EXAMPLES}",
        "time (s)": round(elapsed, 1),
    }
    report.add("HTTP fuzzing (schemathesis, live OpenAPI documents)", figures)
    assert still_up == list(SERVICES)
    assert not total.failures, "\n\n".join(total.examples)
    assert total.requests >= 100

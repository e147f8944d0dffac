"""Scenario 5: HTTP fuzzing. Schemathesis generates requests from each service's live
/openapi.json (valid data and deliberately invalid data) and sends them, with the API key, to
the four services running as real processes on the real broker and database. No answer may be
a 5xx, and every answer must fit the document: its status declared, its body its schema."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
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
from tests.reliability.lifecycle import Driver
from tests.support import API_KEY

pytestmark = pytest.mark.reliability

SEED = 20261130
# Examples per operation and pass: ~80 operations x 2-3 passes, within 3 minutes in full.
EXAMPLES = 40 if FULL else 3
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


def fuzz(base_url: str, findings: Findings, known: dict[str, str]) -> None:
    """Every operation of the service's live document: valid then invalid data with generated
    ids, then valid data aimed at a real client's records (``known`` path parameters)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        names = re.findall(r"{(\w+)}", operation.path)
        real = {name: known[name] for name in names if name in known}
        passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if names and len(real) == len(names):
            passes.append((GenerationMode.POSITIVE, real))
        for mode, path_parameters in passes:
            try:
                _fuzz_operation(base_url, operation, mode, findings, path_parameters)
            except Unsatisfiable:
                # An operation without parameters or body has no invalid form: nothing to send.
                assert mode == GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # a generator that cannot build this operation's data
                findings.record("not generated", f"{operation.label} ({mode})", repr(exc))


def _fuzz_operation(base_url: str, operation, mode: GenerationMode, findings: Findings, path_parameters) -> None:  # noqa: ANN001
    auth = {"Authorization": f"Bearer {API_KEY}"}

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
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


async def a_client(cluster: Cluster) -> dict[str, str]:
    """A client who signed a retainer and paid the deposit: real ids for the fuzzer to aim at."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        driver = Driver(cluster)
        client = await driver.capture_and_sign(http, 0)
        assert client is not None and client.deal_id is not None
        assert await driver.pay_deposit(http, client)
        deadline = time.monotonic() + 60
        subscriptions: list = []
        while not subscriptions and time.monotonic() < deadline:
            subscriptions = (await http.get(f"{cluster.url('billing')}/subscriptions", params={"lead_id": client.lead_id})).json()
            await asyncio.sleep(0.3)
        known = {"lead_id": client.lead_id, "deal_id": client.deal_id, "invoice_id": client.invoice_id,
                 "channel": "website", "name": "welcome"}
        if subscriptions:
            known["subscription_id"] = subscriptions[0]["subscription_id"]
        return known


async def test_http_fuzzing(tmp_path, databases, report) -> None:
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    try:
        known = await a_client(cluster)
        started = time.monotonic()
        per_service = {service: Findings() for service in SERVICES}
        for service in SERVICES:
            await asyncio.to_thread(fuzz, cluster.url(service), per_service[service], known)
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

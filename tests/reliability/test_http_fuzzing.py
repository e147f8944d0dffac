"""Scenario 5: HTTP fuzzing. Schemathesis generates requests from each service's live
/openapi.json (valid data and deliberately invalid data) and sends them, with the API key, to
the four services running as real processes on the real broker and database. No answer may be
a 5xx, and every answer must fit the document: its status declared, its body its schema.

Then the boundaries of issue 15: hypothesis pushes odd values (integers past 2^63, amounts of
1e30 or with too many decimals, dates of year 1 or 9999, time zones that are not IANA keys,
lone surrogates, JSON nested thousands deep, YAML alias bombs) into the fields where they
once answered 500. Each answer must be a 2xx or a 4xx, and a 422 must name the field."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.billing import domain as billing_domain
from services.billing.settings import Settings as BillingSettings
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


def _fuzz_operation(base_url: str, operation, mode: GenerationMode, findings: Findings, path_parameters) -> None:
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
    def one(case) -> None:
        response = case.call(base_url=base_url, headers=auth, timeout=30)
        findings.requests += 1
        findings.statuses[response.status_code // 100 * 100] += 1
        for kind, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=auth)
            except FailureGroup as group:
                findings.record(kind, operation.label, "; ".join(str(f) for f in group.exceptions))

    one()


# --------------------------------------------------------------------------- boundaries (issue 15)

BOUNDARY_EXAMPLES = 25 if FULL else 4
NESTED = "\u0000nested\u0000"  # stands for a JSON value nested too deep, spliced into the raw body

# Odd values by kind: the ones that answered 500 before (sampled first), then generated ones.
ODD: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.sampled_from([2**31, 2**63, 2**63 + 1, 2**64, -(2**63) - 1, 10**9 + 1, 10**30]),
        st.integers(min_value=-(2**80), max_value=2**80),
    ),
    "decimal": st.one_of(
        st.sampled_from(
            [
                "1e30",
                "-1e30",
                "99999999999999999999.99",
                "1000000000000.01",
                "1e-999999",
                "1E+999999",
                "NaN",
                "Infinity",
                "10.005",
                "0.001",
                1e308,
                -1e308,
            ]
        ),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    "date": st.one_of(
        st.sampled_from(
            [
                "0001-01-01",
                "9999-12-31",
                "1899-12-31",
                "2201-01-01",
                "9999-12-31T23:59:59+14:00",
                "0001-01-01T00:00:00-12:00",
            ]
        ),
        st.dates().map(lambda d: d.isoformat()),
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    ),
    "zone": st.one_of(
        st.sampled_from(["America", "Europe", "x" * 100_000, "../../etc/passwd", "UTC/", "Etc"]),
        st.text(max_size=80),
    ),
    "text": st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(
            lambda lone: f"a{lone}b"
        ),
        st.text(min_size=1, max_size=200),
    ),
    "nested": st.just(NESTED),
}


@dataclass(frozen=True)
class Boundary:
    """One field of one operation, a valid request around it, and the odd values it gets."""

    service: str
    method: str
    path: str
    field: str  # a body path ("lines.0.amount") or a query parameter
    kinds: tuple[str, ...]
    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    signed: bool = False  # billing's payment webhook: signed like the provider signs it


def boundaries(known: dict[str, str]) -> list[Boundary]:
    def lead() -> dict[str, Any]:
        return {
            "name": "Ada Lovelace",
            "email": f"ada-{uuid.uuid4().hex[:10]}@example.com",
            "channel": "website",
            "currency": "EUR",
        }

    project = {
        "title": "Relaunch",
        "kind": "project",
        "currency": "EUR",
        "lines": [{"description": "Build", "amount": "100"}],
    }
    payment = {"invoice_id": known["invoice_id"], "amount": "1.00", "currency": "EUR", "method": "bank_transfer"}
    hook = {
        "id": "evt",
        "type": "payment.succeeded",
        "data": {"invoice_id": known["invoice_id"], "amount": "1.00", "currency": "EUR"},
    }
    found = [
        *(
            Boundary("leads", "POST", "/leads", name, kinds, body=lead())
            for name, kinds in [
                ("employees", ("int",)),
                ("timezone", ("zone", "text")),
                ("budget", ("decimal",)),
                ("annual_revenue", ("decimal",)),
                ("name", ("text", "nested")),
                ("utm", ("nested",)),
            ]
        ),
        Boundary("leads", "GET", "/leads", "offset", ("int",)),
        Boundary("leads", "GET", "/funnel", "to", ("date",)),
        Boundary("leads", "GET", "/funnel", "from", ("date",), query={"to": "2030-01-01"}),
        Boundary("leads", "POST", f"/leads/{known['lead_id']}/deals", "lines.0.amount", ("decimal",), body=project),
        Boundary("leads", "POST", f"/leads/{known['lead_id']}/deals", "lines.0.hours", ("decimal",), body=project),
        Boundary(
            "leads",
            "POST",
            "/channels/website/spend",
            "amount",
            ("decimal",),
            body={"amount": "10", "currency": "EUR", "period": "2026-03"},
        ),
        Boundary(
            "leads",
            "POST",
            "/channels/website/spend",
            "period_start",
            ("date",),
            body={"amount": "10", "currency": "EUR", "period_start": "2026-03-01", "period_end": "2026-03-31"},
        ),
        Boundary(
            "leads",
            "POST",
            f"/deals/{known['deal_id']}/change-requests",
            "line",
            ("int",),
            body={"description": "Add a blog"},
        ),
        Boundary(
            "nurture",
            "POST",
            "/feedback",
            "comment",
            ("text", "nested"),
            body={"lead_id": known["lead_id"], "survey": "onboarding", "score": 9, "comment": "fine"},
        ),
        Boundary(
            "nurture",
            "PUT",
            "/sequences/boundary",
            "steps",
            ("nested",),
            body={"trigger": "lead.captured", "steps": []},
        ),
        Boundary("billing", "GET", "/invoices", "offset", ("int",)),
        Boundary("billing", "POST", "/payments", "amount", ("decimal",), body=payment),
        Boundary("billing", "POST", "/payments", "reference", ("text",), body=payment),
        Boundary("billing", "POST", "/payments/webhook", "data.amount", ("decimal",), body=hook, signed=True),
        Boundary(
            "billing",
            "POST",
            f"/invoices/{known['invoice_id']}/credit-notes",
            "amount",
            ("decimal",),
            body={"amount": "1.00", "currency": "EUR", "reason": "goodwill"},
        ),
        Boundary(
            "billing",
            "POST",
            "/price-changes",
            "effective_at",
            ("date",),
            body={"percent": "5", "effective_at": "2030-01-01"},
        ),
        Boundary(
            "billing",
            "POST",
            "/price-changes",
            "percent",
            ("decimal",),
            body={"percent": "5", "effective_at": "2030-01-01"},
        ),
        Boundary("retention", "GET", "/clients", "offset", ("int",)),
        Boundary("retention", "GET", "/economics", "to", ("date",)),
        Boundary("retention", "GET", "/economics", "from", ("date",), query={"to": "2030-01-01"}),
        Boundary(
            "retention",
            "POST",
            "/referrals",
            "name",
            ("text", "nested"),
            body={"lead_id": known["lead_id"], "name": "Grace", "email": "grace@example.com"},
        ),
    ]
    if "subscription_id" in known:
        found.append(
            Boundary(
                "billing",
                "POST",
                "/time-entries",
                "hours",
                ("decimal",),
                body={"subscription_id": known["subscription_id"], "hours": "1"},
            )
        )
    return found


def _placed(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    target: Any = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return copy


def _request(boundary: Boundary, value: Any, secret: str) -> dict[str, Any]:
    """httpx.request arguments: a JSON body written as a client writes it (lone surrogates as
    ``\\ud800`` escapes), a nested value spliced in raw (json.dumps cannot write it)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if boundary.body is None:
        return {"params": {**boundary.query, boundary.field: value}, "headers": headers}
    body = _placed(boundary.body, boundary.field, value)
    if boundary.signed:
        body["id"] = f"evt_{uuid.uuid4().hex}"
    raw = json.dumps(body).encode()
    if value == NESTED:
        depth = 3000
        raw = raw.replace(json.dumps(NESTED).encode(), b"[" * depth + b"]" * depth)
    headers["Content-Type"] = "application/json"
    if boundary.signed:
        headers.pop("Authorization")
        now = int(datetime.now(UTC).timestamp())
        headers[billing_domain.SIGNATURE_HEADER] = billing_domain.sign(body=raw, secret=secret, timestamp=now)
    return {"content": raw, "headers": headers}


def _names(detail: Any, name: str) -> bool:
    """Whether a refusal by the schema or the JSON guard (a list of errors) names the field: in
    its ``loc`` or in words. A sentence from the business rules ("applies to no subscription")
    is about the request as a whole and is not checked."""
    if not isinstance(detail, list):
        return True
    last = name.split(".")[-1]
    return any(last in map(str, error.get("loc", [])) or last in str(error.get("msg", "")) for error in detail)


def _push(http: httpx.Client, url: str, boundary: Boundary, out: Findings, secret: str) -> int:
    """One boundary's generated values, sent; returns how many hypothesis generated."""
    label = f"{boundary.method} {boundary.path} {boundary.field}"
    generated = 0

    @seed(SEED)
    @settings(
        max_examples=BOUNDARY_EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(value=st.one_of(*(ODD[kind] for kind in boundary.kinds)))
    def one(value: Any) -> None:
        nonlocal generated
        generated += 1
        started = time.monotonic()
        response = http.request(boundary.method, url + boundary.path, **_request(boundary, value, secret))
        took = time.monotonic() - started
        out.requests += 1
        out.statuses[response.status_code // 100 * 100] += 1
        shown = repr(value)[:80]
        if response.status_code >= 500:
            out.record("boundary 5xx", label, f"{shown}: {response.status_code} {response.text[:300]}")
        elif response.status_code == 422 and not _names(response.json().get("detail"), boundary.field):
            out.record("boundary 422 not naming the field", label, f"{shown}: {response.text[:300]}")
        if took > 5:
            out.record("boundary answers over 5 s", label, f"{shown}: {took:.1f} s")

    one()
    return generated


def push_boundaries(base_urls: dict[str, str], known: dict[str, str], findings: dict[str, Findings]) -> int:
    """Every boundary with its odd values, then the YAML alias bomb of finding 6; returns how
    many values hypothesis generated."""
    secret = BillingSettings().webhook_secret.get_secret_value()
    with httpx.Client(timeout=30) as http:
        generated = sum(_push(http, base_urls[b.service], b, findings[b.service], secret) for b in boundaries(known))
        bomb = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        bomb += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 8)]
        bomb.append("criteria:\n  industry:\n    weight: 1\n    values: *a7")
        started = time.monotonic()
        response = http.put(
            base_urls["leads"] + "/icp",
            content="\n".join(bomb) + "\n",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/yaml"},
        )
        took = time.monotonic() - started
        findings["leads"].requests += 1
        findings["leads"].statuses[response.status_code // 100 * 100] += 1
        if response.status_code != 422 or took > 1:
            findings["leads"].record("boundary 5xx", "PUT /icp alias bomb", f"{response.status_code} in {took:.1f} s")
    return generated


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
            subscriptions = (
                await http.get(f"{cluster.url('billing')}/subscriptions", params={"lead_id": client.lead_id})
            ).json()
            await asyncio.sleep(0.3)
        known = {
            "lead_id": client.lead_id,
            "deal_id": client.deal_id,
            "invoice_id": client.invoice_id,
            "channel": "website",
            "name": "welcome",
        }
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
        started = time.monotonic()
        bounded = Findings()
        boundary_findings = dict.fromkeys(SERVICES, bounded)
        generated = await asyncio.to_thread(
            push_boundaries, {s: cluster.url(s) for s in SERVICES}, known, boundary_findings
        )
        boundary_elapsed = time.monotonic() - started
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
        "boundary fields (issue 15)": len(boundaries(known)),
        "boundary requests (hypothesis examples, + the YAML alias bomb)": f"{bounded.requests} ({generated} generated)",
        "boundary answers by class": ", ".join(f"{k // 100}xx: {v}" for k, v in sorted(bounded.statuses.items())),
        "boundary 5xx": bounded.failures["boundary 5xx"],
        "boundary 422 that do not name the field": bounded.failures["boundary 422 not naming the field"],
        "boundary answers over 5 s": bounded.failures["boundary answers over 5 s"],
        "boundary time (s)": round(boundary_elapsed, 1),
    }
    report.add("HTTP fuzzing (schemathesis, live OpenAPI documents)", figures)
    assert still_up == list(SERVICES)
    assert not total.failures, "\n\n".join(total.examples)
    assert not bounded.failures, "\n\n".join(bounded.examples)
    assert total.requests >= 100

"""Issue 15, findings 3 and 6, from outside: requests against each service's real app over a
real database (no broker: routes only write to the outbox). Every odd number, date, nesting,
text or YAML document answers a 4xx whose detail names the field, never a 500, and fast."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord

from services.billing import domain as billing_domain
from shared import events as ev
from tests.access.support import build_app, migrate
from tests.support import API_KEY, consumer_record

pytestmark = pytest.mark.integration

HUGE = "9223372036854775808"  # 2^63


@asynccontextmanager
async def served(service: str, database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The service's app on a migrated database, and a client with the bootstrap key. Server
    errors come back as 500 answers (as a real server gives them), not as exceptions."""
    await migrate(service, database_url)
    app = build_app(service, database_url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers, timeout=30) as http:
            yield http, app.state.runtime
    finally:
        await app.state.runtime.engine.dispose()


def locs(response: httpx.Response) -> list[list]:
    """The ``loc`` of each error in a 422 whose detail is a list; fails on any other answer."""
    assert response.status_code == 422, f"{response.status_code}: {response.text[:300]}"
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return [error["loc"] for error in detail]


def lead(**over: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {"name": "Ada Lovelace", "email": f"ada-{tag}@{tag}.example", "channel": "website"} | over


# --------------------------------------------------------------------------- leads


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("employees", 2**63),
        ("employees", 2**64 + 5),
        ("timezone", "America"),
        ("timezone", "x" * 100_000),
        ("budget", "1e30"),
        ("budget", "99999999999999999999.99"),
    ],
)
async def test_capture_refuses_odd_values_naming_the_field(database_url: str, field: str, value: Any) -> None:
    async with served("leads", database_url) as (http, _):
        extra = {"currency": "EUR"} if field == "budget" else {}
        response = await http.post("/leads", json=lead(**{field: value}, **extra))
        assert locs(response) == [["body", field]]


async def test_capture_refuses_a_lone_surrogate_naming_the_field(database_url: str) -> None:
    """``"\\ud800"`` in a name was a 500: the error echoing it, or its row, could not be encoded."""
    async with served("leads", database_url) as (http, _):
        body = json.dumps(lead(name="Ada \ud800 Lovelace"))  # ensure_ascii: the escape as a client sends it
        response = await http.post("/leads", content=body, headers={"content-type": "application/json"})
        assert locs(response) == [["body", "name"]]
        raw = json.dumps(lead(company="X")).encode().replace(b'"X"', b'"\xed\xa0\x80"')  # the CESU-8 bytes
        response = await http.post("/leads", content=raw, headers={"content-type": "application/json"})
        assert locs(response) == [["body", "company"]]
        assert (await http.get("/leads?q=%ED%A0%80")).status_code == 200  # a query decodes it to U+FFFD


@pytest.mark.parametrize(
    ("query", "field"),
    [("to=9999-12-31", "to"), ("from=0001-01-01", "from"), ("from=0001-01-01&to=9999-12-31", "from")],
)
async def test_funnel_dates_out_of_range_answer_422_naming_the_field(database_url: str, query: str, field: str) -> None:
    async with served("leads", database_url) as (http, _):
        await http.post("/leads", json=lead())
        assert ["query", field] in locs(await http.get(f"/funnel?{query}"))
        assert (await http.get("/funnel?from=1900-01-01&to=2200-12-31")).status_code == 200


async def test_a_deal_line_of_1e30_is_refused_and_so_never_won(database_url: str) -> None:
    """It was proposed and won in leads while billing dead-lettered the deal.won: a deal won
    with no deposit invoice."""
    async with served("leads", database_url) as (http, _):
        lead_id = (await http.post("/leads", json=lead())).json()["lead_id"]
        deal = {
            "title": "Relaunch",
            "kind": "project",
            "currency": "EUR",
            "lines": [{"description": "Build", "amount": "1e30"}],
        }
        assert locs(await http.post(f"/leads/{lead_id}/deals", json=deal)) == [["body", "lines", 0, "amount"]]
        deal["currency"] = "JPY"
        deal["lines"] = [{"description": "Build", "amount": "1000.5"}]
        response = await http.post(f"/leads/{lead_id}/deals", json=deal)
        assert locs(response) == [["body", "lines"]] and "JPY" in response.text
        deal["lines"] = [{"description": "Build", "amount": "1000"}]
        assert (await http.post(f"/leads/{lead_id}/deals", json=deal)).status_code == 201


def alias_bomb(levels: int = 6) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    lines.append(f"criteria:\n  industry:\n    weight: 1\n    values: *a{levels - 1}")
    return "\n".join(lines) + "\n"


async def test_an_icp_alias_bomb_is_refused_at_once(database_url: str) -> None:
    """Finding 6: a 523-byte alias bomb cost 2.2 s and 130 MB, and was accepted."""
    async with served("leads", database_url) as (http, _):
        before = (await http.get("/icp")).json()
        started = time.perf_counter()
        response = await http.put("/icp", content=alias_bomb(), headers={"content-type": "application/yaml"})
        took = time.perf_counter() - started
        assert response.status_code == 422 and "aliases" in response.json()["detail"], response.text[:300]
        assert took < 1.0, f"{took:.2f} s"
        assert (await http.get("/icp")).json()["version"] == before["version"]
        deep = "criteria: " + "[" * 200 + "]" * 200 + "\n"
        response = await http.put("/icp", content=deep, headers={"content-type": "application/yaml"})
        assert response.status_code == 422 and "deeper" in response.json()["detail"]


# --------------------------------------------------------------------------- every service


WRITES = {"leads": "/leads", "nurture": "/feedback", "billing": "/payments", "retention": "/referrals"}


@pytest.mark.parametrize("service", list(WRITES))
async def test_json_nested_10000_deep_answers_422_on_every_service(database_url: str, service: str) -> None:
    """/feedback, which parses its own body, raised RecursionError (a 500)."""
    async with served(service, database_url) as (http, _):
        deep = b"[" * 10_000 + b"]" * 10_000
        response = await http.post(WRITES[service], content=deep, headers={"content-type": "application/json"})
        assert locs(response) == [["body"]] and "nested deeper" in response.text
        wrapped = b'{"comment": ' + b"[" * 70 + b"]" * 70 + b"}"
        response = await http.post(WRITES[service], content=wrapped, headers={"content-type": "text/plain"})
        assert locs(response) == [["body", "comment"]]


@pytest.mark.parametrize(
    ("service", "path"), [("leads", "/leads"), ("billing", "/invoices"), ("retention", "/clients")]
)
async def test_an_offset_past_the_bound_answers_422(database_url: str, service: str, path: str) -> None:
    async with served(service, database_url) as (http, _):
        assert locs(await http.get(path, params={"offset": HUGE})) == [["query", "offset"]]
        assert (await http.get(path, params={"offset": 10**9})).status_code == 200


async def test_economics_over_a_period_out_of_range_answers_422_naming_it(database_url: str) -> None:
    async with served("retention", database_url) as (http, _):
        response = await http.get("/economics", params={"from": "0001-01-01", "to": "9999-12-31"})
        assert response.status_code == 422 and response.json()["detail"].startswith("to:"), response.text[:300]
        response = await http.get("/economics", params={"from": "0001-01-01"})
        assert response.status_code == 422 and response.json()["detail"].startswith("from:"), response.text[:300]
        assert (await http.get("/economics", params={"from": "1900-01-01", "to": "2200-12-31"})).status_code == 200


# --------------------------------------------------------------------------- billing


def _record(envelope: ev.Envelope, offset: int = 0) -> ConsumerRecord:
    return consumer_record(envelope, offset=offset)


def won(total: str = "3000") -> ev.Envelope:
    payload = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="Relaunch",
        kind="project",
        currency="EUR",
        lines=[ev.ScopeLine(description="Build", amount=Decimal(total))],
        total=Decimal(total),
        signed_by="Ada Lovelace",
        signed_at=datetime.now(UTC),
        deposit_share=Decimal("0.30"),
    )
    return ev.make_event("deal.won", payload, producer="leads", occurred_at=datetime.now(UTC), lead_id=uuid.uuid4())


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, record: ConsumerRecord, *, reason: str, error: str, attempts: int = 1) -> None:
        self.sent.append((reason, error))


async def deposit_invoice(http: httpx.AsyncClient, runtime: Any) -> dict[str, Any]:
    """A deposit invoice, from a deal.won applied by billing's own consumer."""
    envelope = won()
    await runtime._consumer.handle([_record(envelope)])
    invoices = (await http.get("/invoices", params={"lead_id": str(envelope.lead_id)})).json()
    assert len(invoices) == 1, invoices
    return invoices[0]


async def test_a_signed_webhook_with_an_amount_of_1e30_answers_422(database_url: str) -> None:
    """It raised decimal.InvalidOperation (a 500) on a real invoice."""
    async with served("billing", database_url) as (http, runtime):
        invoice = await deposit_invoice(http, runtime)
        body = json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": "payment.succeeded",
                "data": {"invoice_id": invoice["invoice_id"], "amount": "1e30", "currency": "EUR"},
            }
        ).encode()
        signature = billing_domain.sign(
            body=body,
            secret=runtime.settings.webhook_secret.get_secret_value(),
            timestamp=int(runtime.clock.now().timestamp()),
        )
        response = await http.post(
            "/payments/webhook",
            content=body,
            headers={"Clientflow-Signature": signature, "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text[:300]
        assert "amount" in response.json()["detail"] and "10^12" in response.json()["detail"]
        after = (await http.get(f"/invoices/{invoice['invoice_id']}")).json()
        assert after["amount_paid"] == "0.00"


async def test_a_20_digit_payment_is_refused_not_kept_as_credit(database_url: str) -> None:
    async with served("billing", database_url) as (http, runtime):
        invoice = await deposit_invoice(http, runtime)
        payment = {
            "invoice_id": invoice["invoice_id"],
            "amount": "99999999999999999999.99",
            "currency": "EUR",
            "method": "bank_transfer",
        }
        assert locs(await http.post("/payments", json=payment)) == [["body", "amount"]]
        assert locs(await http.post("/payments", json=payment | {"amount": "100.001"})) == [["body", "amount"]]
        assert (await http.get("/credit-balances", params={"lead_id": invoice["lead_id"]})).json() == []


async def test_billing_dead_letters_a_deal_won_past_the_bounds_naming_the_field(database_url: str) -> None:
    """What an older leads let through: dead-lettered as an invalid payload with the field, at
    once, instead of failing billing's handler three times (``handler_error``)."""
    async with served("billing", database_url) as (http, runtime):
        dead = DeadLetters()
        runtime._consumer.dead_letters = dead
        bad = won()
        bad.data["lines"][0]["amount"] = bad.data["total"] = "1e30"
        await runtime._consumer.handle([_record(bad)])
        assert [reason for reason, _ in dead.sent] == ["invalid_payload"]
        assert "lines.0.amount" in dead.sent[0][1]
        assert (await http.get("/invoices", params={"lead_id": str(bad.lead_id)})).json() == []

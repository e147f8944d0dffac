"""Issue 15, finding 3 and 6, at the level of schemas and parsers: odd numbers, dates, time
zones, nesting and YAML are refused where they enter, with the field named, and an event that
carries such a value is dead-lettered with the reason instead of failing its consumer."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.billing.schemas import CreditNoteIn, PaymentIn, PriceChangeIn, WebhookIn
from services.leads.domain import IdealClientProfile
from services.leads.schemas import ChangeRequestIn, DealIn, LeadIn, SpendIn, WonIn
from services.nurture.content import load_sequence
from services.nurture.domain import SequenceError
from shared import events as ev
from shared import safe_yaml
from shared.clock import Clock
from shared.consumer import BatchConsumer
from shared.db import PlumbingBase, create_engine
from shared.http import MAX_JSON_DEPTH, JsonGuardMiddleware
from shared.metrics import PlumbingMetrics
from shared.money import MAX_AMOUNT, Amount, in_currency, minor_units
from shared.uow import UnitOfWorkFactory
from tests.support import consumer_record

NOW = datetime(2026, 11, 23, tzinfo=UTC)
LEAD = {"name": "Ada Lovelace", "email": "ada@example.com", "channel": "website"}


def refused(model: type[BaseModel], data: dict[str, Any]) -> dict[tuple, str]:
    """The fields ``data`` is refused on, with their messages (fails when it is accepted)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return {tuple(error["loc"]): error["msg"] for error in caught.value.errors()}


# --------------------------------------------------------------------------- leads at capture


@pytest.mark.parametrize("key", ["America", "Europe", "x" * 100_000, "../../etc/passwd", "Mars/Olympus", "", "utc "])
def test_a_time_zone_that_is_not_an_iana_key_is_refused_at_capture(key: str) -> None:
    """Finding 1's cause: "America" (a directory of the tz database) or a 100,000-character key
    was accepted and later stopped every send pass."""
    errors = refused(LeadIn, {**LEAD, "timezone": key})
    assert list(errors) == [("timezone",)]


@pytest.mark.parametrize("key", ["UTC", "Europe/London", "America/Argentina/ComodRivadavia", "Asia/Kolkata"])
def test_iana_keys_are_accepted(key: str) -> None:
    assert LeadIn.model_validate({**LEAD, "timezone": key}).timezone == key


@pytest.mark.parametrize("employees", [2**63, 2**63 + 1, 10**9 + 1, -1])
def test_employees_are_bounded(employees: int) -> None:
    """2^63 or more was a 500 (an integer no database column holds)."""
    assert list(refused(LeadIn, {**LEAD, "employees": employees})) == [("employees",)]


def test_a_billion_employees_is_still_a_number() -> None:
    assert LeadIn.model_validate({**LEAD, "employees": 10**9}).employees == 10**9


@pytest.mark.parametrize(
    ("budget", "currency", "message"),
    [
        ("1e30", "EUR", "10^12"),
        ("1000000000000.01", "EUR", "10^12"),
        ("1.5", "JPY", "JPY amounts have no decimals"),
        ("10.005", "EUR", "EUR amounts have at most two decimal places"),
        ("1.0001", "KWD", "KWD amounts have at most three decimal places"),
        ("NaN", "EUR", "finite"),
    ],
)
def test_a_budget_is_bounded_and_has_no_more_decimals_than_its_currency(
    budget: str, currency: str, message: str
) -> None:
    errors = refused(LeadIn, {**LEAD, "budget": budget, "currency": currency})
    assert list(errors) == [("budget",)] and message in errors[("budget",)]


@pytest.mark.parametrize(
    ("amount", "currency"), [("1000000000000", "EUR"), ("12.50", "EUR"), ("1200", "JPY"), ("1.250", "KWD")]
)
def test_amounts_within_the_bounds_are_accepted(amount: str, currency: str) -> None:
    assert LeadIn.model_validate({**LEAD, "budget": amount, "currency": currency}).budget == Decimal(amount)


def test_currency_minor_units_follow_iso_4217() -> None:
    assert [minor_units(c) for c in ("EUR", "USD", "GBP", "JPY", "KRW", "KWD", "BHD", "CLF")] == [
        2,
        2,
        2,
        0,
        0,
        3,
        3,
        4,
    ]
    assert in_currency(Decimal("12.50"), "EUR") == Decimal("12.50")
    assert in_currency(Decimal("1E+3"), "JPY") == Decimal("1E+3")  # 1000, written the other way


# --------------------------------------------------------------------------- deals (the producer of deal.won)


def test_a_deal_line_of_1e30_is_refused_naming_the_line() -> None:
    """It was accepted and won in leads, and billing dead-lettered the deal.won (no deposit)."""
    errors = refused(
        DealIn,
        {"title": "Site", "kind": "project", "currency": "EUR", "lines": [{"description": "Build", "amount": "1e30"}]},
    )
    assert list(errors) == [("lines", 0, "amount")] and "10^12" in errors[("lines", 0, "amount")]


def test_deal_lines_that_add_up_past_the_bound_are_refused() -> None:
    lines = [{"description": f"Part {n}", "amount": "999999999999"} for n in range(3)]
    errors = refused(DealIn, {"title": "Site", "kind": "project", "currency": "EUR", "lines": lines})
    assert any("total" in message and "10^12" in message for message in errors.values())


def test_deal_amounts_have_the_decimals_of_the_deal_currency() -> None:
    errors = refused(
        DealIn,
        {"title": "Site", "kind": "project", "currency": "JPY", "lines": [{"description": "Build", "amount": "100.5"}]},
    )
    assert "lines[0].amount" in errors[("lines",)] and "JPY" in errors[("lines",)]
    errors = refused(DealIn, {"title": "SEO", "kind": "retainer", "currency": "EUR", "monthly_fee": "100.001"})
    assert list(errors) == [("monthly_fee",)]


def test_change_requests_and_spend_are_bounded() -> None:
    assert list(refused(ChangeRequestIn, {"description": "More", "line": 2**63})) == [("line",)]
    assert list(refused(ChangeRequestIn, {"description": "More", "amount": "1e30", "currency": "EUR"})) == [("amount",)]
    assert list(refused(SpendIn, {"amount": "1e30", "currency": "EUR", "period": "2026-03"})) == [("amount",)]
    assert list(refused(SpendIn, {"amount": "10", "currency": "EUR", "period": "0000-01"})) == [("period",)]
    errors = refused(
        SpendIn, {"amount": "10", "currency": "EUR", "period_start": "0001-01-01", "period_end": "9999-12-31"}
    )
    assert set(errors) == {("period_start",), ("period_end",)}
    assert list(refused(WonIn, {"signed_by": "Ada", "signed_at": "9999-12-31T23:00:00+00:00"})) == [("signed_at",)]


# --------------------------------------------------------------------------- billing


def test_a_credit_balance_of_20_digits_is_refused() -> None:
    """99999999999999999999.99 was accepted as a payment and kept as the client's credit."""
    errors = refused(
        PaymentIn,
        {
            "invoice_id": str(uuid.uuid4()),
            "amount": "99999999999999999999.99",
            "currency": "EUR",
            "method": "bank_transfer",
        },
    )
    assert list(errors) == [("amount",)]


def test_payments_keep_their_currency_decimals_and_reach_the_use_case_when_not_positive() -> None:
    base = {"invoice_id": str(uuid.uuid4()), "currency": "JPY", "method": "bank_transfer"}
    assert list(refused(PaymentIn, {**base, "amount": "10.5"})) == [("amount",)]
    assert PaymentIn.model_validate({**base, "amount": "-5"}).amount == -5  # the use case's own message
    assert list(refused(CreditNoteIn, {"amount": "1e30", "currency": "EUR", "reason": "x"})) == [("amount",)]
    assert list(refused(PriceChangeIn, {"percent": "1e30", "effective_at": "2027-01-01"})) == [("percent",)]
    errors = refused(PriceChangeIn, {"percent": "10", "effective_at": "9999-01-01"})
    assert all(loc[0] == "effective_at" for loc in errors)


def test_a_webhook_amount_of_1e30_is_refused_before_any_arithmetic() -> None:
    """It raised decimal.InvalidOperation in the payment's quantize (a 500)."""
    hook = {
        "id": "evt_1",
        "type": "payment.succeeded",
        "data": {"invoice_id": str(uuid.uuid4()), "amount": "1e30", "currency": "EUR"},
    }
    errors = refused(WebhookIn, hook)
    assert list(errors) == [("data", "amount")]


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_amount_accepts_exactly_the_finite_decimals_from_0_to_10_to_the_12(value: Decimal) -> None:
    adapter = TypeAdapter(Amount)
    fits = value.is_finite() and 0 <= value <= MAX_AMOUNT
    try:
        adapter.validate_python(value)
    except ValidationError:
        assert not fits
    else:
        assert fits


# --------------------------------------------------------------------------- the event contract


def test_event_payloads_carry_the_same_bounds() -> None:
    won = {
        "deal_id": str(uuid.uuid4()),
        "title": "Site",
        "kind": "project",
        "currency": "EUR",
        "lines": [{"description": "Build", "amount": "1e30"}],
        "total": "1e30",
        "signed_by": "Ada",
        "signed_at": NOW.isoformat(),
        "deposit_share": "0.4",
    }
    errors = refused(ev.DealWon, won)
    assert ("lines", 0, "amount") in errors and ("total",) in errors
    captured = {"name": "Ada", "email": None, "channel": "website", "fit_score": 10}
    assert list(refused(ev.LeadCaptured, {**captured, "timezone": "America"})) == [("timezone",)]
    assert list(refused(ev.LeadCaptured, {**captured, "employees": 2**63})) == [("employees",)]
    assert list(
        refused(
            ev.PaymentSucceeded,
            {
                "payment_id": str(uuid.uuid4()),
                "invoice_id": str(uuid.uuid4()),
                "amount": "99999999999999999999.99",
                "currency": "EUR",
                "method": "card",
                "paid_at": NOW.isoformat(),
                "invoice_paid": False,
            },
        )
    ) == [("amount",)]


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, record: ConsumerRecord, *, reason: str, error: str, attempts: int = 1) -> None:
        self.sent.append((reason, error))


def _record(envelope: ev.Envelope, offset: int) -> ConsumerRecord:
    return consumer_record(envelope, offset=offset)


async def test_a_consumer_dead_letters_an_event_past_the_bounds_with_the_reason(tmp_path) -> None:
    """A deal.won whose line is 1e30 reached billing's handler and failed there (handler_error
    after three tries); it is now refused as an invalid payload naming the field, at once."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plumbing.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
    applied: list[str] = []

    async def on_won(tx: Any, event: ev.Envelope, payload: ev.DealWon) -> None:
        applied.append(payload.title)
        payload.total.quantize(Decimal("0.01"))  # what billing's deposit does with it

    dead = FakeDeadLetters()
    consumer = BatchConsumer(
        service="billing",
        uow=UnitOfWorkFactory(engine, producer="billing", clock=Clock()),
        handlers={"deal.won": on_won},
        dead_letters=dead,
        metrics=PlumbingMetrics("billing", CollectorRegistry()),
        max_attempts=3,
    )
    good = ev.DealWon(
        deal_id=uuid.uuid4(),
        title="good",
        kind="project",
        currency="EUR",
        lines=[ev.ScopeLine(description="Build", amount=Decimal(3000))],
        total=Decimal(3000),
        signed_by="Ada",
        signed_at=NOW,
        deposit_share=Decimal("0.4"),
    )
    bad = ev.make_event("deal.won", good, producer="leads", occurred_at=NOW)
    bad.data["lines"][0]["amount"] = bad.data["total"] = "1e30"  # as an older leads let through
    await consumer.handle(
        [_record(bad, 0), _record(ev.make_event("deal.won", good, producer="leads", occurred_at=NOW), 1)]
    )
    await engine.dispose()
    assert applied == ["good"]
    assert [reason for reason, _ in dead.sent] == ["invalid_payload"]
    assert "lines.0.amount" in dead.sent[0][1] and "10^12" in dead.sent[0][1]


# --------------------------------------------------------------------------- JSON nesting and surrogates


def test_json_nested_10000_deep_is_refused_naming_the_body() -> None:
    """It raised RecursionError in /feedback, which parses its body itself (a 500)."""
    guard = JsonGuardMiddleware(app=None)
    refusal = guard.refusal(b"[" * 10_000 + b"]" * 10_000)
    assert refusal is not None and refusal["loc"] == ["body"] and refusal["type"] == "json_too_deep"
    deep = b'{"name": "Ada", "utm": ' + b'{"a": ' * MAX_JSON_DEPTH + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    refusal = guard.refusal(deep)
    assert refusal is not None and refusal["loc"] == ["body", "utm"]
    assert guard.refusal(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is None  # at the limit is fine


def test_a_lone_surrogate_is_refused_naming_its_field_and_pairs_pass() -> None:
    guard = JsonGuardMiddleware(app=None)
    refusal = guard.refusal(json.dumps({"name": "\ud800", "email": "a@example.com"}).encode())
    assert refusal is not None and refusal["loc"] == ["body", "name"] and refusal["type"] == "string_unicode"
    json.dumps(refusal).encode()  # the answer itself can be written
    assert guard.refusal(b'{"note": "\xed\xa0\x80"}')["loc"] == ["body", "note"]  # CESU-8 bytes, which json.loads takes
    assert guard.refusal(json.dumps({"name": "\U0001f600 ok"}).encode()) is None  # a pair is one character
    assert guard.refusal(b'{"name": "\\\\ud800"}') is None  # an escaped backslash, then text


def test_bodies_that_are_not_json_go_on_untouched() -> None:
    guard = JsonGuardMiddleware(app=None)
    assert guard.refusal(b"name,email\n" + b"[" * 500 + b",x@example.com\n") is None
    assert guard.refusal(b"criteria:\n  industry: {weight: 1, values: [saas]}\n") is None
    assert guard.refusal(b"token=abc&comment=%5B%5B%5B") is None


def test_the_guard_costs_little_on_a_large_ordinary_body() -> None:
    guard = JsonGuardMiddleware(app=None)
    body = json.dumps({"lines": [{"description": "x" * 40, "amount": "10.00"} for _ in range(5000)]}).encode()
    started = time.perf_counter()
    assert guard.refusal(body) is None
    assert time.perf_counter() - started < 1.0


# --------------------------------------------------------------------------- YAML


def alias_bomb(levels: int = 6) -> str:
    """Nested aliases: a few hundred bytes that expand to 9^levels strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    lines.append(f"criteria:\n  industry:\n    weight: 1\n    values: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    """Finding 6: 523 bytes of nested aliases cost 2.2 s and 130 MB in PUT /icp."""
    started = time.perf_counter()
    with pytest.raises(ValueError, match="aliases"):
        IdealClientProfile.from_yaml(alias_bomb())
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("base: &b {weight: 1}\ncriteria: {industry: {weight: 2, values: [saas]}}\n", "anchors"),
        ("criteria: " + "[" * 100 + "]" * 100 + "\n", "deeper"),
        ('criteria:\n  industry: {weight: 1, values: ["\\ud800"]}\n', "surrogate"),
        ("criteria: {employees: {weight: 1, min: 2026-02-30}}\n", "cannot be read"),
        ("# " + "x" * (safe_yaml.MAX_BYTES + 1) + "\ncriteria: {}\n", "bytes"),
    ],
)
def test_yaml_is_refused_when_it_could_cost_or_break(document: str, message: str) -> None:
    with pytest.raises(safe_yaml.UnsafeYaml, match=message):
        safe_yaml.load(document)
    with pytest.raises(ValueError, match="YAML refused"):
        IdealClientProfile.from_yaml(document)


def test_plain_yaml_still_reads() -> None:
    assert safe_yaml.load("criteria:\n  industry: {weight: 2, values: [saas, fintech]}\n") == {
        "criteria": {"industry": {"weight": 2, "values": ["saas", "fintech"]}}
    }


def test_sequence_files_are_read_with_the_same_limits(tmp_path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(3))
    with pytest.raises(SequenceError, match="aliases"):
        load_sequence(path)


def test_a_nul_in_text_is_refused_naming_its_field() -> None:
    """PostgreSQL's text refuses NUL: found by the fuzzer on POST /webhooks/inbound (a 500)."""
    from shared.http import JsonGuardMiddleware

    guard = JsonGuardMiddleware(app=None)  # type: ignore[arg-type]
    refused = guard.refusal(b'{"subject": "ok", "text": "a\\u0000b"}')
    assert refused is not None and refused["loc"] == ["body", "text"] and "NUL" in refused["msg"]
    assert guard.refusal(b'{"text": "a\\\\u0000b"}') is None  # an escaped backslash, then u0000: no NUL

"""The event contract matches the table of docs/design.md (Topics and event types) and behaves as
readers expect."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared import events as ev
from shared import topics

DESIGN_TABLE = {
    "leads": "lead.captured lead.qualified lead.disqualified lead.stage_changed lead.erased channel.spend_recorded",
    "deals": "deal.proposed deal.won deal.lost deal.change_requested",
    "engagement": "email.sent email.opened email.clicked email.bounced lead.unsubscribed lead.sales_ready "
    "feedback.received takeover.started takeover.ended",
    "payments": "invoice.issued payment.succeeded payment.failed deposit.cleared invoice.overdue "
    "subscription.started subscription.paused subscription.resumed subscription.cancelled "
    "price.change_scheduled dunning.state_changed",
    "cancellations": "cancellation.requested cancellation.saved cancellation.completed",
    "retention": "client.health_changed client.tier_changed churn_risk.raised referral.made loyalty.points_awarded",
}
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# Types added since the first contract (docs/design.md lists them with the rest; extend, never rename).
ADDED = {
    "payments": {
        "invoice.voided",
        "hours.usage_reported",
        "credit_note.issued",
        "deal.written_off",
        # Save offers that bill: a discount or a downgrade, and the full fee back.
        "subscription.price_changed",
    },
    # The sales department: owners (a new lead's owner travels in lead.captured) and activities.
    "leads": {"lead.assigned", "lead.activity_logged"},
    # Estimates the client signs: a revision keeps the deal and adds a version.
    "deals": {"deal.revised"},
    # The agency ends a relationship itself (issue 18, part 4).
    "cancellations": {"client.terminated"},
    # A client's tier set by hand (issue 19, item 8): the record a replay reads back.
    "retention": {
        "client.tier_set_manually",
        # Exchange rates set as data (issue 19, item 6) and the nudge of hours left unused (item 4).
        "exchange_rate.set",
        "client.hours_underused",
    },
}


def test_every_event_type_of_the_design_is_in_the_contract_on_its_topic() -> None:
    for topic, names in DESIGN_TABLE.items():
        assert set(ev.types_on(topic)) == set(names.split()) | ADDED.get(topic, set()), topic
    assert set(topics.BUSINESS_TOPICS) == set(DESIGN_TABLE)
    assert topics.dlq("payments") == "payments.dlq"


def test_envelope_round_trip_keeps_money_as_strings_and_time_in_utc() -> None:
    lead_id = uuid.uuid4()
    payload = ev.DepositCleared(
        deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=Decimal("1250.50"), currency="eur", cleared_at=NOW
    )
    event = ev.make_event("deposit.cleared", payload, producer="billing", occurred_at=NOW, lead_id=lead_id)
    raw = json.loads(event.model_dump_json())
    assert raw["data"]["amount"] == "1250.50" and raw["data"]["currency"] == "EUR"
    assert raw["occurred_at"].endswith("Z") and raw["type"] == "deposit.cleared" and raw["version"] == 1
    back = ev.Envelope.model_validate_json(event.model_dump_json())
    assert back.payload() == payload
    assert back.key == str(lead_id).encode()


def test_readers_ignore_fields_they_do_not_know() -> None:
    event = ev.make_event(
        "deal.lost", ev.DealLost(deal_id=uuid.uuid4(), reason="price"), producer="leads", occurred_at=NOW
    )
    raw = json.loads(event.model_dump_json())
    raw["added_by_a_newer_producer"] = {"x": 1}
    raw["data"]["also_new"] = True
    parsed = ev.Envelope.model_validate(raw)
    assert parsed.payload() == ev.DealLost.model_validate(event.data)


def test_a_consequence_joins_the_correlation_chain_of_its_cause() -> None:
    cause = ev.make_event("deal.lost", ev.DealLost(deal_id=uuid.uuid4(), reason="x"), producer="leads", occurred_at=NOW)
    effect = ev.make_event(
        "lead.stage_changed",
        ev.LeadStageChanged(from_stage="decision", to_stage="interest", cause="deal.lost"),
        producer="leads",
        occurred_at=NOW + timedelta(seconds=1),
        cause=cause,
    )
    assert effect.correlation_id == cause.correlation_id and effect.causation_id == cause.event_id


def test_a_payload_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError):
        ev.make_event("deal.won", ev.DealLost(deal_id=uuid.uuid4(), reason="x"), producer="leads", occurred_at=NOW)


def test_naive_times_bad_money_and_unknown_currencies_are_refused() -> None:
    with pytest.raises(ValidationError):
        ev.Envelope(type="deal.lost", occurred_at=datetime(2026, 1, 1), producer="x")
    for amount, currency in (("-1", "EUR"), ("NaN", "EUR"), ("10", "EURO"), ("ten", "EUR")):
        with pytest.raises(ValidationError):
            ev.DepositCleared(
                deal_id=uuid.uuid4(), invoice_id=uuid.uuid4(), amount=amount, currency=currency, cleared_at=NOW
            )

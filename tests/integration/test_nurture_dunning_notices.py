"""Every step of the dunning ladder a client should hear about is an e-mail in their language
(overdue, warning, blocked, the final notice), and the steps they should not (retries, the
grace of an expired card, clear) send nothing: a sequence's ``match`` conditions on the trigger's
payload, against the real broker and database."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.nurture.app import create_app
from services.nurture.domain import SequenceError, sequence_from_dict
from shared import events as ev
from tests.integration.test_nurture_sequences import T0, ManualClock, settings_for
from tests.integration.test_nurture_tasks import happen
from tests.support import as_json, event, eventually, run_service

pytestmark = pytest.mark.integration


async def test_each_dunning_step_mails_the_client_in_their_language(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path)
    lead_id = uuid.uuid4()
    person = ev.LeadCaptured(
        name="Shirin Ahmadi",
        email=f"{lead_id.hex[:10]}@example.ir",
        language="fa",
        timezone="Asia/Tehran",
        channel="website",
        consent_marketing=False,  # the ladder is about their own invoice: transactional
        fit_score=70,
    )
    invoice_id = uuid.uuid4()

    def step(before: str | None, after: str) -> ev.Envelope:
        moved = ev.DunningStateChanged(invoice_id=invoice_id, from_state=before, to_state=after)
        return event("dunning.state_changed", moved, lead_id=lead_id, producer_name="billing")

    async with run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc:
        await happen(svc, kafka_bootstrap, event("lead.captured", person, lead_id=lead_id, producer_name="leads"))
        await happen(
            svc,
            kafka_bootstrap,
            step(None, "retrying"),
            step("retrying", "overdue"),
            step("overdue", "warning"),
            step("warning", "blocked"),
            step("blocked", "cancelled"),
        )

        async def notices() -> list[dict]:
            found = [
                m
                for m in as_json(await svc.client.get(f"/leads/{lead_id}/messages"))
                if m["sequence"] == "dunning_notices"
            ]
            return found if len(found) >= 4 else []

        sent = await eventually(notices, timeout=30)
    # Four steps, four e-mails (the retry sent none), each in Persian and each its own words.
    assert len(sent) == 4 and {m["language"] for m in sent} == {"fa"}
    subjects = {m["subject"] for m in sent}
    assert len(subjects) == 4 and "اخطار نهایی: اشتراک شما پایان یافت" in subjects


def test_match_names_fields_of_the_triggers_payload() -> None:
    base = {
        "name": "x",
        "trigger": "dunning.state_changed",
        "category": "transactional",
        "steps": [{"template": "dunning_notice"}],
    }
    fields = {"dunning.state_changed": {"invoice_id", "from_state", "to_state", "reason", "subscription_id"}}
    made = sequence_from_dict(
        {**base, "match": {"to_state": ["warning", "Blocked"]}},
        known_events=["dunning.state_changed"],
        payload_fields=fields,
    )
    assert made.matches({"to_state": "blocked"}) and not made.matches({"to_state": "retrying"})
    with pytest.raises(SequenceError, match="match 'state' is not a field"):
        sequence_from_dict(
            {**base, "match": {"state": "warning"}}, known_events=["dunning.state_changed"], payload_fields=fields
        )
    with pytest.raises(SequenceError, match="match must map"):
        sequence_from_dict(
            {**base, "match": ["warning"]}, known_events=["dunning.state_changed"], payload_fields=fields
        )

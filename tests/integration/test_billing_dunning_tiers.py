"""Dunning for every tier against a real broker and database, on a test-owned clock: a `fire`
client whose card fails is at the final notice (`warning`) at once and blocked 7 days after
the due date; a `good` client gets the normal first step (`retrying`) and is still there then."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.billing.store import Account, DunningCase
from shared import events as ev
from shared import topics
from shared.clock import SimulatedClock
from tests.integration.test_billing_retainers import billing_app, signed
from tests.integration.test_billing_service import deal_won, invoices_of, send
from tests.support import TopicReader, event, eventually, run_service

pytestmark = pytest.mark.integration


async def test_a_fire_client_gets_the_final_notice_at_once_a_good_one_the_first_step(
    kafka_bootstrap: str, database_url: str
) -> None:
    start = datetime(2032, 3, 1, 9, tzinfo=UTC)
    clock = SimulatedClock(start)
    fire, good = uuid.uuid4(), uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:

        async def tier_of(lead_id: uuid.UUID) -> str | None:
            async with svc.runtime.uow.sessions() as session:
                account = await session.get(Account, lead_id)
                return account.tier if account else None

        for lead_id, tier in ((fire, "fire"), (good, "good")):
            changed = event("client.tier_changed", ev.ClientTierChanged(from_tier=None, to_tier=tier), lead_id=lead_id)
            await send(kafka_bootstrap, changed, deal_won(lead_id, total="2000"))

            async def has_tier(lead_id: uuid.UUID = lead_id, tier: str = tier) -> bool:
                return await tier_of(lead_id) == tier

            await eventually(has_tier, timeout=30)

        deposits = {lead_id: (await invoices_of(svc, lead_id))[0] for lead_id in (fire, good)}
        for lead_id, deposit in deposits.items():
            raw, headers = signed(
                {
                    "id": f"evt_{uuid.uuid4().hex}",
                    "type": "payment.failed",
                    "data": {
                        "invoice_id": deposit["invoice_id"],
                        "amount": deposit["amount"],
                        "currency": "EUR",
                        "reference": f"ch_{uuid.uuid4().hex[:8]}",
                        "decline_code": "insufficient_funds",
                    },
                },
                at=start,
            )
            answer = await svc.client.post("/payments/webhook", content=raw, headers=headers)
            assert answer.status_code == 200 and answer.json()["status"] == "applied"
            assert answer.json()["dunning_state"] == {fire: "warning", good: "retrying"}[lead_id]

        (fire_first,) = await reader.wait_for("dunning.state_changed", lead_id=fire)
        (good_first,) = await reader.wait_for("dunning.state_changed", lead_id=good)
        assert (fire_first.data["from_state"], fire_first.data["to_state"]) == (None, "warning")
        assert (good_first.data["from_state"], good_first.data["to_state"]) == (None, "retrying")

        # A week past the due date: fire is blocked (7 days); good is not yet at its warning (10).
        due = datetime.fromisoformat(deposits[fire]["due_at"])
        clock.advance_to(due + timedelta(days=7, minutes=1))
        fire_moves = await reader.wait_for("dunning.state_changed", lead_id=fire, count=2, timeout=30)
        assert [m.data["to_state"] for m in fire_moves] == ["warning", "blocked"]

        async def good_case() -> DunningCase | None:
            async with svc.runtime.uow.sessions() as session:
                return await session.get(DunningCase, uuid.UUID(deposits[good]["invoice_id"]))

        async def good_walked() -> bool:
            case = await good_case()
            return case is not None and case.retries_done >= 1  # the pass at the jump retried its card

        await eventually(good_walked, timeout=30)
        case = await good_case()
        assert case is not None and case.state == "retrying"
        await reader._poll()
    good_states = [m.data["to_state"] for m in reader.events("dunning.state_changed", lead_id=good)]
    assert good_states == ["retrying"]

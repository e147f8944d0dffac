"""Billing's write-off of a won project against a real broker and database: open milestones
voided, what was due on a partly paid one credited, the loss recorded, announced, listed per
client and channel, and counted once committed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared import topics
from shared.clock import SimulatedClock
from tests.integration.test_billing_retainers import billing_app
from tests.integration.test_billing_service import deal_won, invoices_of, pay, send
from tests.support import TopicReader, as_json, run_service

pytestmark = pytest.mark.integration


async def test_a_project_from_hell_is_written_off_once(kafka_bootstrap: str, database_url: str) -> None:
    clock = SimulatedClock(datetime(2031, 3, 3, 9, tzinfo=UTC))
    lead_id = uuid.uuid4()
    settings, app = billing_app(kafka_bootstrap, database_url, clock)
    async with TopicReader(kafka_bootstrap, topics.PAYMENTS) as reader, run_service(app, settings.port) as svc:
        won = deal_won(lead_id, total="3000", share="0.30")
        deal_id = won.data["deal_id"]
        await send(kafka_bootstrap, won)
        (deposit,) = await invoices_of(svc, lead_id)
        as_json(await pay(svc, deposit["invoice_id"], "900"))

        async def milestone(amount: str) -> dict:
            return as_json(
                await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "milestone", "amount": amount})
            )

        paid, partly, open_ = await milestone("1000"), await milestone("600"), await milestone("300")
        as_json(await pay(svc, paid["invoice_id"], "1000"))
        as_json(await pay(svc, partly["invoice_id"], "200"))

        missing = await svc.client.post(f"/deals/{deal_id}/write-off", json={})
        assert missing.status_code == 422 and "reason" in missing.text
        unknown = await svc.client.post(f"/deals/{uuid.uuid4()}/write-off", json={"reason": "x"})
        assert unknown.status_code == 404 and "deal_id" in unknown.text

        done = as_json(await svc.client.post(f"/deals/{deal_id}/write-off", json={"reason": "project from hell"}))
        # By hand: worth 3000 (no change orders); paid 900 + 1000 + 200 = 2100; written off 900
        # = 400 still due on the partly paid milestone (credited) + 300 open (voided) + 200 never invoiced.
        assert (done["worth"], done["paid"], done["amount"]) == ("3000.00", "2100.00", "900.00")
        assert done["voided_invoice_ids"] == [open_["invoice_id"]] and len(done["credit_note_ids"]) == 1
        voided = as_json(await svc.client.get(f"/invoices/{open_['invoice_id']}"))
        assert voided["status"] == "void" and voided["amount_due"] == "0.00"
        credited = as_json(await svc.client.get(f"/invoices/{partly['invoice_id']}"))
        assert (credited["amount_credited"], credited["amount_due"]) == ("400.00", "0.00")
        assert as_json(await svc.client.get(f"/invoices/{paid['invoice_id']}"))["status"] == "paid"

        (event,) = await reader.wait_for("deal.written_off", lead_id=lead_id)
        assert event.data["deal_id"] == deal_id and Decimal(event.data["amount"]) == Decimal("900")
        assert event.data["voided_invoice_ids"] == [open_["invoice_id"]]
        assert event.data["credit_note_ids"] == done["credit_note_ids"]
        assert (await reader.wait_for("invoice.voided", lead_id=lead_id))[0].data["invoice_id"] == open_["invoice_id"]

        mine = as_json(await svc.client.get("/write-offs", params={"lead_id": str(lead_id)}))
        assert mine["totals"] == {"EUR": "900.00"} and [w["deal_id"] for w in mine["write_offs"]] == [deal_id]
        channel = mine["write_offs"][0]["channel"]
        assert channel == (won.data.get("channel") or "unknown")  # the channel deal.won named
        assert mine["by_channel"] == {channel: {"EUR": "900.00"}}
        by_channel = as_json(await svc.client.get("/write-offs", params={"channel": channel}))
        assert deal_id in [w["deal_id"] for w in by_channel["write_offs"]]
        metrics = (await svc.client.get("/metrics")).text
        assert f'clientflow_billing_written_off_total{{channel="{channel}",currency="EUR"}} 900.0' in metrics

        # Nothing changes the second time, nor for a retainer.
        again = await svc.client.post(f"/deals/{deal_id}/write-off", json={"reason": "again"})
        assert again.status_code == 409 and "already written off" in again.text
        # A written-off project bills nothing more.
        more = await svc.client.post(f"/deals/{deal_id}/invoices", json={"kind": "final"})
        assert more.status_code == 409 and "written off" in more.text
        retainer = deal_won(lead_id, kind="retainer", total="1000", monthly_fee="1000", share="0.5")
        await send(kafka_bootstrap, retainer)
        await invoices_of(svc, lead_id, count=5)
        refused = await svc.client.post(f"/deals/{retainer.data['deal_id']}/write-off", json={"reason": "x"})
        assert refused.status_code == 409 and "only a project" in refused.text
        after = as_json(await svc.client.get("/write-offs", params={"lead_id": str(lead_id)}))
        assert after["totals"] == {"EUR": "900.00"} and len(after["write_offs"]) == 1
        assert len(reader.events("deal.written_off", lead_id=lead_id)) == 1

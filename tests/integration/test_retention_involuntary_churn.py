"""A client whose last subscription billing ends for non-payment (dunning gave up) has left
like any other: retention records and announces a completed cancellation, so leads moves the
client to `churned`; a client who completed the cancellation flow is announced only once."""

from __future__ import annotations

import pytest

from shared import events as ev
from shared import topics
from tests.integration.test_retention_service import (
    client_when,
    event,
    now,
    outbox_count,
    retention,  # noqa: F401 - the fixture
    send,
    subscribed_client,
)
from tests.support import TopicReader, as_json

pytestmark = pytest.mark.integration


async def test_dunning_ending_the_last_subscription_completes_a_cancellation(retention, kafka_bootstrap: str) -> None:  # noqa: F811
    lead_id, subscription_id = await subscribed_client(retention, kafka_bootstrap, fee="700", currency="EUR")
    end = ev.SubscriptionCancelled(
        subscription_id=subscription_id, reason="non_payment", effective_at=now(), monthly_fee="700", currency="EUR"
    )
    envelope = event("subscription.cancelled", end, lead_id=lead_id, producer_name="billing")
    await send(kafka_bootstrap, envelope, envelope)  # redelivered: still one announcement
    await client_when(retention, lead_id, subscription_status="cancelled")

    async with TopicReader(kafka_bootstrap, topics.CANCELLATIONS) as reader:
        (done,) = await reader.wait_for("cancellation.completed", lead_id=lead_id)
    payload = ev.CancellationCompleted.model_validate(done.data)
    assert payload.reason == "non_payment" and payload.subscription_id == subscription_id
    assert await outbox_count(retention, "cancellation.completed", lead_id) == 1
    record = as_json(await retention.client.get(f"/cancellations/{payload.cancellation_id}"))
    assert record["status"] == "completed" and record["offer"]["kind"] == "none"


async def test_a_completed_flow_is_not_announced_twice(retention, kafka_bootstrap: str) -> None:  # noqa: F811
    lead_id, subscription_id = await subscribed_client(retention, kafka_bootstrap, fee="800", currency="EUR")
    requested = as_json(await retention.client.post(f"/clients/{lead_id}/cancellation", json={"reason": "price"}))
    as_json(await retention.client.post(f"/cancellations/{requested['cancellation_id']}/confirm"))
    # Billing ends the subscription because of it.
    end = ev.SubscriptionCancelled(subscription_id=subscription_id, reason="price", effective_at=now())
    await send(kafka_bootstrap, event("subscription.cancelled", end, lead_id=lead_id, producer_name="billing"))
    await client_when(retention, lead_id, subscription_status="cancelled")
    assert await outbox_count(retention, "cancellation.completed", lead_id) == 1

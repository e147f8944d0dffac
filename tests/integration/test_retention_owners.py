"""Every client has owners: the sales owner from ``lead.captured`` and ``lead.assigned`` (role
lead), the account owner a won deal handed it to (``lead.assigned`` role account), shown on the
client and listed by ``GET /clients?owner=``, against the embedded broker and a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.retention.app import create_app
from services.retention.settings import Settings
from shared import events as ev
from shared.access.principal import new_token, token_hash, token_prefix
from shared.db import InboxRow
from shared.events import Envelope
from tests.integration.test_retention_service import cleared, client_when, send, won
from tests.support import as_json, event, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def retention(kafka_bootstrap: str, database_url: str):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


def captured(lead_id: uuid.UUID, *, owner_id: uuid.UUID | None, duplicate: bool = False) -> Envelope:
    payload = ev.LeadCaptured(
        name="Ada",
        email=f"{lead_id.hex[:8]}@example.com",
        channel="website",
        fit_score=70,
        owner_id=owner_id,
        duplicate=duplicate,
    )
    return event("lead.captured", payload, lead_id=lead_id, producer_name="leads")


def assigned(lead_id: uuid.UUID, owner_id: uuid.UUID | None, *, role: str, previous: uuid.UUID | None) -> Envelope:
    payload = ev.LeadAssigned.model_validate(
        {"owner_id": owner_id, "previous_owner_id": previous, "role": role, "reason": "a won deal"}
    )
    return event("lead.assigned", payload, lead_id=lead_id, producer_name="leads")


async def applied(svc: Any, envelope: Envelope) -> None:
    async def check() -> bool:
        async with svc.runtime.uow.sessions() as session:
            return await session.get(InboxRow, envelope.event_id) is not None

    await eventually(check)


async def success_person(svc: Any, bootstrap: str) -> tuple[uuid.UUID, str]:
    """A person in success with a token, as the people registry (leads) announces them."""
    person_id, token_id = uuid.uuid4(), uuid.uuid4()
    token = new_token(token_id)
    now = datetime.now(UTC)
    state = ev.PersonState(
        person_id=person_id,
        email=f"success-{person_id.hex[:8]}@agency.test",
        name="A success manager",
        role="success",
        active=True,
        revision=1,
        changed_at=now,
    )
    issued = ev.TokenState(
        token_id=token_id,
        person_id=person_id,
        token_hash=token_hash(token),
        prefix=token_prefix(token),
        created_at=now,
        revision=1,
    )
    added, created = (
        event("person.added", state, producer_name="leads"),
        event("token.created", issued, producer_name="leads"),
    )
    await send(bootstrap, added, created)
    await applied(svc, added)
    await applied(svc, created)
    return person_id, token


async def listed(svc: Any, owner: str, headers: dict[str, str] | None = None) -> list[str]:
    body = as_json(await svc.client.get("/clients", params={"owner": owner, "limit": 500}, headers=headers))
    assert body["total"] == len(body["items"])  # the test's clients fit one page
    return [item["lead_id"] for item in body["items"]]


async def test_a_client_shows_its_owners_and_is_listed_by_account_owner(retention, kafka_bootstrap: str) -> None:
    account, token = await success_person(retention, kafka_bootstrap)
    seller, other_seller = uuid.uuid4(), uuid.uuid4()
    handed, pooled = uuid.uuid4(), uuid.uuid4()
    await send(
        kafka_bootstrap,
        captured(handed, owner_id=seller),
        won(handed, "9000", "EUR"),
        cleared(handed, "900", "EUR"),
        assigned(handed, account, role="account", previous=None),
        captured(pooled, owner_id=other_seller),
        cleared(pooled, "300", "EUR"),
    )
    body = await client_when(retention, handed, owner_id=str(seller), account_owner_id=str(account), deals_won=1)
    assert body["became_client_at"] is not None
    await client_when(retention, pooled, owner_id=str(other_seller), account_owner_id=None, tier="good")

    # The sales owner moves on; the account owner stays (each role is its own owner).
    await send(kafka_bootstrap, assigned(handed, other_seller, role="lead", previous=seller))
    await client_when(retention, handed, owner_id=str(other_seller), account_owner_id=str(account))

    async def by_owner() -> bool:
        assert await listed(retention, str(account)) == [str(handed)]
        nobodys = await listed(retention, "none")
        assert str(pooled) in nobodys and str(handed) not in nobodys
        # Filtered on the account owner only: the sales owner of both lists neither.
        assert await listed(retention, str(other_seller)) == []
        return True

    await eventually(by_owner)
    (item,) = as_json(await retention.client.get("/clients", params={"owner": str(account)}))["items"]
    assert (item["owner_id"], item["account_owner_id"]) == (str(other_seller), str(account))

    assert await listed(retention, "me", headers={"Authorization": f"Bearer {token}"}) == [str(handed)]
    me_by_key = await retention.client.get("/clients", params={"owner": "me"})  # the API key is no person
    assert me_by_key.status_code == 422 and "owner" in me_by_key.text
    banana = await retention.client.get("/clients", params={"owner": "banana"})
    assert banana.status_code == 422 and "owner" in banana.text


async def test_a_repeat_touch_moves_a_known_leads_owner_and_creates_no_one(retention, kafka_bootstrap: str) -> None:
    known, stranger, before, now_owner = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await send(kafka_bootstrap, captured(known, owner_id=before))
    await client_when(retention, known, owner_id=str(before), account_owner_id=None)

    # Back in the pool, then a repeat touch that says who owns the lead now.
    await send(kafka_bootstrap, assigned(known, None, role="lead", previous=before))
    await client_when(retention, known, owner_id=None)
    touch, unknown = (
        captured(known, owner_id=now_owner, duplicate=True),
        captured(stranger, owner_id=now_owner, duplicate=True),
    )
    await send(kafka_bootstrap, touch, unknown)
    await client_when(retention, known, owner_id=str(now_owner))
    await applied(retention, unknown)
    assert (await retention.client.get(f"/clients/{stranger}")).status_code == 404

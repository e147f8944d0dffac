"""Inbound e-mail is verified: the mail provider signs its webhook, and a reply belongs to a
person only through its thread (a Message-ID we sent). A forged reply that merely names a
client's address changes nothing (it used to start a takeover and stop dunning); it is kept
for a person to match by hand."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from services.nurture.app import create_app
from shared import topics
from shared.signing import SIGNATURE_HEADER, sign
from tests.integration.test_nurture_sequences import T0, ManualClock, capture, captured, settings_for
from tests.support import TopicReader, run_service

SECRET = "mail-provider-secret-" + "m" * 20


def signed(body: dict, *, secret: str = SECRET, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = int(at if at is not None else time.time())
    return raw, {SIGNATURE_HEADER: sign(body=raw, secret=secret, timestamp=stamp), "content-type": "application/json"}


async def test_replies_are_matched_by_thread_and_signed_by_the_provider(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path, webhook_secret=SECRET)
    lead_id = uuid.uuid4()
    async with (
        run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc,
        TopicReader(kafka_bootstrap, topics.ENGAGEMENT) as reader,
    ):
        person = captured(consent=True)
        await capture(svc, kafka_bootstrap, lead_id, person)
        (sent,) = await reader.wait_for("email.sent", lead_id=lead_id)
        async with httpx.AsyncClient(base_url=svc.url) as provider:
            forged_body = {"from": person.email, "subject": "Re: stop", "text": "please stop the reminders"}
            # Unsigned, badly signed or replayed: refused.
            assert (await provider.post("/webhooks/inbound", json=forged_body)).status_code == 400
            raw, headers = signed(forged_body, secret="not-the-secret")
            assert (await provider.post("/webhooks/inbound", content=raw, headers=headers)).status_code == 400
            raw, headers = signed(forged_body, at=time.time() - 3600)
            assert (await provider.post("/webhooks/inbound", content=raw, headers=headers)).status_code == 400
            # Signed, but only the From address names the client: kept unmatched, nothing else.
            raw, headers = signed(forged_body | {"lead_id": str(lead_id)})
            forged = await provider.post("/webhooks/inbound", content=raw, headers=headers)
            assert forged.status_code == 202 and forged.json()["matched"] is False and forged.json()["lead_id"] is None
            takeover = await svc.client.get(f"/leads/{lead_id}/messages")
            assert takeover.status_code == 200
            unmatched = (await svc.client.get("/replies")).json()
            assert [r["reply_id"] for r in unmatched] == [forged.json()["reply_id"]]
            # A reply in the thread of an e-mail we sent (References, newest last) is the person's.
            thread = {
                "from": person.email,
                "subject": "Re: Welcome",
                "text": "Can we talk?",
                "references": f"<unknown@x.example> <{sent.data['message_id']}@clientflow.example>",
            }
            raw, headers = signed(thread)
            real = await provider.post("/webhooks/inbound", content=raw, headers=headers)
            assert real.status_code == 201, real.text
            assert real.json()["lead_id"] == str(lead_id) and real.json()["matched_by"] == "thread"
            assert real.json()["takeover_started"]
        (started,) = await reader.wait_for("takeover.started", lead_id=lead_id)
        assert started.data["by"] == "inbound-reply"
        # Only one takeover: the forged reply started none.
        await svc.client.delete(f"/leads/{lead_id}/takeover", params={"by": "maria"})
        # A person matches the kept one by hand.
        matched = await svc.client.post(f"/replies/{forged.json()['reply_id']}/match", json={"lead_id": str(lead_id)})
        assert matched.status_code == 200 and matched.json()["matched_by"] == "person"
        assert (await svc.client.get("/replies")).json() == []


async def test_bounces_need_the_signature_too(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, database_url, tmp_path, webhook_secret=SECRET)
    async with run_service(create_app(settings, clock=ManualClock(T0)), settings.port) as svc:
        person = captured(consent=True)
        await capture(svc, kafka_bootstrap, uuid.uuid4(), person)
        body = {"email": person.email, "hard": True, "reason": "550 no such user"}
        async with httpx.AsyncClient(base_url=svc.url) as provider:
            assert (await provider.post("/webhooks/bounce", json=body)).status_code == 400
            raw, headers = signed(body)
            assert (await provider.post("/webhooks/bounce", content=raw, headers=headers)).status_code == 202
        # An admin's token may post one by hand.
        assert (await svc.client.post("/webhooks/bounce", json=body)).status_code == 202

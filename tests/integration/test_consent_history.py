"""Consent kept honest, on a real broker and databases (leads and nurture on one broker): each
grant and withdrawal is kept with its time, source and wording version; after an unsubscribe a
form that ticks the box again only records a request and e-mails a signed confirmation link
(Persian, right to left, for a Persian speaker); the link's GET changes nothing, its POST brings
marketing back; a bad token is a 404."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from pathlib import Path

import pytest

from services.leads.app import create_app as leads_app
from services.leads.settings import Settings as LeadsSettings
from services.nurture import domain as nurture_domain
from services.nurture.app import create_app as nurture_app
from services.nurture.settings import Settings as NurtureSettings
from tests.support import as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def databases(database_factory) -> dict[str, str]:
    """One database per service (made outside the event loop: PostgreSQL's are created with asyncio.run)."""
    return {name: database_factory(name) for name in ("leads", "nurture")}


@pytest.fixture
async def services(kafka_bootstrap: str, databases: dict[str, str], tmp_path: Path):
    leads_settings = service_settings(LeadsSettings, bootstrap=kafka_bootstrap, database_url=databases["leads"])
    nurture_settings = service_settings(
        NurtureSettings,
        bootstrap=kafka_bootstrap,
        database_url=databases["nurture"],
        data_dir=tmp_path,
        send_interval_s=0.1,
        quiet_hours_start=0,
        quiet_hours_end=0,
    )
    async with (
        run_service(leads_app(leads_settings), leads_settings.port) as leads,
        run_service(nurture_app(nurture_settings), nurture_settings.port) as nurture,
    ):
        yield leads, nurture, nurture_settings


def form(address: str, **more: object) -> dict:
    return {
        "name": "Shirin Tehrani",
        "email": address,
        "channel": "website",
        "language": "fa",
        "timezone": "Asia/Tehran",
        "consent_marketing": True,
        **more,
    }


def confirmation_mails(settings: NurtureSettings, address: str) -> list[email.message.EmailMessage]:
    found = []
    for path in sorted((settings.data_dir / "mail" / "nurture").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        if address in str(message["To"]) and "/consent/confirm?token=" in text:
            found.append(message)  # type: ignore[arg-type]
    return found


async def test_consent_after_an_unsubscribe_comes_back_only_through_the_link(services) -> None:
    leads, nurture, settings = services
    address = f"shirin-{uuid.uuid4().hex[:8]}@tehran-studio.example"
    lead_id = as_json(await leads.client.post("/leads", json=form(address, consent_wording="2025-11")))["lead_id"]
    url = f"/leads/{lead_id}/consent"

    async def granted() -> dict:
        found = await nurture.client.get(url)
        return found.json() if found.status_code == 200 and found.json()["history"] else {}

    consent = await eventually(granted)
    assert consent["consent_marketing"] is True
    assert [(h["kind"], h["source"], h["wording"]) for h in consent["history"]] == [("grant", "form", "2025-11")]

    # The unsubscribe link: a withdrawal from the unsubscribe link.
    token = nurture_domain.unsubscribe_token(settings.secret_key.get_secret_value(), uuid.UUID(lead_id))
    assert (await nurture.client.post("/unsubscribe", params={"token": token})).status_code == 200
    consent = as_json(await nurture.client.get(url))
    assert consent["consent_marketing"] is False and consent["unsubscribed_at"] is not None
    assert consent["history"][-1]["kind"] == "withdrawal" and consent["history"][-1]["source"] == "unsubscribe_link"

    # Anyone may submit the form with this address: a request, not a grant; an e-mail to confirm.
    again = await leads.client.post("/leads", json=form(address, job_title="Art director"))
    assert again.status_code == 200 and again.json()["duplicate"] is True

    async def requested() -> dict:
        body = as_json(await nurture.client.get(url))
        return body if body["history"][-1]["kind"] == "request" else {}

    consent = await eventually(requested)
    assert consent["consent_marketing"] is False and consent["pending_request"] is True
    assert consent["history"][-1]["wording"] == "2026-01"  # NURTURE_CONSENT_WORDING_VERSION
    mails = await eventually(lambda: _async(confirmation_mails(settings, address)))
    mail = mails[0]
    assert "لطفاً تأیید کنید" in str(mail["Subject"])
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'dir="rtl"' in html and 'lang="fa"' in html
    link = re.search(r"(/consent/confirm\?token=[^\"\s<&]+)", html)
    assert link is not None
    path = link.group(1)

    # A mail scanner's GET changes nothing; the page has the button.
    page = await nurture.client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text and 'dir="rtl"' in page.text
    assert as_json(await nurture.client.get(url))["consent_marketing"] is False
    # A bad token is nobody's link.
    assert (await nurture.client.post("/consent/confirm", params={"token": "x.y"})).status_code == 404
    assert (await nurture.client.get("/consent/confirm", params={"token": f"{uuid.uuid4().hex}.zz"})).status_code == 404
    assert (await nurture.client.post("/consent/confirm")).status_code == 422

    # The person confirms: marketing is back, from the confirmation link, with the wording.
    confirmed = await nurture.client.post(path)
    assert confirmed.status_code == 200
    consent = as_json(await nurture.client.get(url))
    assert consent["consent_marketing"] is True and consent["pending_request"] is False
    assert [(h["kind"], h["source"]) for h in consent["history"]] == [
        ("grant", "form"),
        ("withdrawal", "unsubscribe_link"),
        ("request", "form"),
        ("grant", "confirmation_link"),
    ]
    assert consent["history"][2]["confirmed_at"] is not None
    # A second click changes nothing.
    assert (await nurture.client.post(path)).status_code == 200
    assert len(as_json(await nurture.client.get(url))["history"]) == 4

    # The duplicate touch filled the empty job title on the lead, never overwriting.
    assert as_json(await leads.client.get(f"/leads/{lead_id}"))["job_title"] == "Art director"
    assert (await nurture.client.get(f"/leads/{uuid.uuid4()}/consent")).status_code == 404

    # Staff record what the person told them: source staff; bad input names the field.
    bad = await nurture.client.post(url, json={"consent": "perhaps"})
    assert bad.status_code == 422 and "consent" in bad.text
    bad = await nurture.client.post(url, json={"consent": False, "wording": "no spaces allowed"})
    assert bad.status_code == 422 and "wording" in bad.text
    assert len(as_json(await nurture.client.get(url))["history"]) == 4
    assert (await nurture.client.post(f"/leads/{uuid.uuid4()}/consent", json={"consent": True})).status_code == 404
    off = as_json(await nurture.client.post(url, json={"consent": False}))
    assert off["consent_marketing"] is False and off["history"][-1]["source"] == "staff"
    on = as_json(await nurture.client.post(url, json={"consent": True, "wording": "phone-2026"}))
    assert on["consent_marketing"] is True
    assert (on["history"][-1]["kind"], on["history"][-1]["source"], on["history"][-1]["wording"]) == (
        "grant",
        "staff",
        "phone-2026",
    )

    # An imported row with consent is a grant from the import.
    imported_address = f"rahim-{uuid.uuid4().hex[:8]}@dhaka-works.example"
    csv = f"name,email,channel,language,consent_marketing\nRahim,{imported_address},event,bn,yes\n"
    report = as_json(
        await leads.client.post("/leads/import", content=csv.encode(), headers={"content-type": "text/csv"})
    )
    assert report["accepted"] == 1
    rahim = as_json(await leads.client.get("/leads", params={"q": imported_address}))["items"][0]["lead_id"]

    async def imported() -> list:
        found = await nurture.client.get(f"/leads/{rahim}/consent")
        return found.json()["history"] if found.status_code == 200 and found.json()["history"] else []

    assert [(h["kind"], h["source"], h["wording"]) for h in await eventually(imported)] == [
        ("grant", "import", "2026-01")
    ]


async def _async(value):  # type: ignore[no-untyped-def]
    return value

"""Estimates the client signs, against a real broker and a real database: versions kept on
revision, the signed public link in the lead's language, acceptance by typed name recorded with
the address, version and digest (one `deal.won`), and every way a link is refused changing nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest

from services.leads.app import create_app
from services.leads.settings import Settings
from shared import topics
from shared.clock import SimulatedClock
from shared.embedded import free_port
from shared.i18n import format_money
from shared.money import quantize
from tests.support import RunningService, TopicReader, as_json, run_service, service_settings

pytestmark = pytest.mark.integration

START = datetime(2031, 3, 3, 9, tzinfo=UTC)

LINES_V1 = [
    {"description": "Brand design", "hours": "10", "amount": "1000"},
    {"description": "Website build", "hours": "20", "amount": "2000"},
]
LINES_V2 = [
    {"description": "Brand design", "hours": "10", "amount": "1000"},
    {"description": "Website build and launch", "hours": "25", "amount": "2500"},
]


@pytest.fixture
async def leads(kafka_bootstrap: str, database_url: str) -> AsyncIterator[tuple[RunningService, SimulatedClock]]:
    port = free_port()
    clock = SimulatedClock(START)
    settings = service_settings(
        Settings, bootstrap=kafka_bootstrap, database_url=database_url, port=port, public_url=f"http://127.0.0.1:{port}"
    )
    async with run_service(create_app(settings, clock=clock), settings.port) as svc:
        yield svc, clock


def lead(language: str, name: str) -> dict:
    return {
        "name": name,
        "email": f"{uuid.uuid4().hex[:10]}@client.example",
        "company": f"{name} & Co",
        "job_title": "Founder",
        "country": "BD" if language == "bn" else "IR",
        "language": language,
        "channel": "website",
        "budget": "5000",
        "currency": "EUR",
        "brief": "A new brand and website",
        "timeline": "next quarter",
        "needs": ["website"],
    }


def estimate(lines: list[dict], **more: object) -> dict:
    return {
        "title": "Brand and website",
        "kind": "project",
        "currency": "EUR",
        "lines": lines,
        "hourly_rate": "90",
    } | more


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    token = query["t"][0]
    bad = token[:-1] + ("0" if token[-1] != "0" else "1")
    return urlunsplit(parts._replace(query=f"v={query['v'][0]}&t={bad}"))


async def test_the_client_reads_and_signs_the_latest_version_by_link(leads, kafka_bootstrap: str) -> None:
    svc, _clock = leads
    anonymous = httpx.AsyncClient(timeout=30)  # the client has no token: the link proves itself
    async with anonymous, TopicReader(kafka_bootstrap, topics.DEALS) as reader:
        lead_id = as_json(await svc.client.post("/leads", json=lead("bn", "Rahim")))["lead_id"]

        past = await svc.client.post(
            f"/leads/{lead_id}/deals", json=estimate(LINES_V1, valid_until=(START - timedelta(days=1)).isoformat())
        )
        assert past.status_code == 422 and "valid_until" in past.text

        first = await svc.client.post(f"/leads/{lead_id}/deals", json=estimate(LINES_V1))
        assert first.status_code == 201, first.text
        v1 = first.json()
        deal_id = v1["deal_id"]
        assert v1["version"] == 1 and v1["status"] == "proposed"
        assert datetime.fromisoformat(v1["valid_until"]) == START + timedelta(days=30)  # LEADS_ESTIMATE_VALID_DAYS
        assert v1["acceptance_url"].startswith(f"{svc.url}/estimates/{deal_id}/accept?v=1&t=")

        # Bad revisions change nothing.
        bad = await svc.client.post(
            f"/deals/{deal_id}/revisions", json=estimate(LINES_V2, valid_until=START.isoformat())
        )
        assert bad.status_code == 422 and "valid_until" in bad.text
        empty = await svc.client.post(f"/deals/{deal_id}/revisions", json=estimate([]))
        assert empty.status_code == 422 and "scope line" in empty.text
        assert as_json(await svc.client.get(f"/deals/{deal_id}"))["version"] == 1

        revised = await svc.client.post(f"/deals/{deal_id}/revisions", json=estimate(LINES_V2) | {"kind": None})
        assert revised.status_code == 201, revised.text
        v2 = revised.json()
        assert v2["deal_id"] == deal_id and v2["version"] == 2 and Decimal(v2["total"]) == Decimal("3500")
        assert v2["acceptance_url"] != v1["acceptance_url"] and "v=2" in v2["acceptance_url"]

        versions = as_json(await svc.client.get(f"/deals/{deal_id}/versions"))
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[0]["digest"] != versions[1]["digest"] and versions[1]["digest"] == v2["digest"]
        assert versions[0]["content"]["lines"][1]["description"] == "Website build"
        assert versions[1]["content"]["lines"][1] == {
            "description": "Website build and launch",
            "hours": "25",
            "amount": "2500",
        }
        (revised_event,) = await reader.wait_for("deal.revised", lead_id=lead_id)
        assert revised_event.data["version"] == 2 and revised_event.data["digest"] == v2["digest"]
        assert revised_event.data["acceptance_url"] == v2["acceptance_url"]
        (proposed_event,) = await reader.wait_for("deal.proposed", lead_id=lead_id)
        assert proposed_event.data["version"] == 1 and proposed_event.data["digest"] == versions[0]["digest"]

        # The first version's link is superseded: refused, nothing changes.
        old_page = await anonymous.get(v1["acceptance_url"])
        assert old_page.status_code == 410 and 'class="superseded"' in old_page.text
        old_accept = await anonymous.post(v1["acceptance_url"], data={"name": "Rahim Uddin"})
        assert old_accept.status_code == 410
        assert as_json(await svc.client.get(f"/deals/{deal_id}"))["status"] == "proposed"

        # A tampered token is refused.
        forged = tampered(v2["acceptance_url"])
        assert (await anonymous.get(forged)).status_code == 403
        assert (await anonymous.post(forged, data={"name": "Mallory"})).status_code == 403

        page = await anonymous.get(v2["acceptance_url"])
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert 'lang="bn"' in html and 'dir="ltr"' in html
        # Money as Bengali writes it: Bengali digits, lakh grouping, the sign after.
        assert "Brand design" in html and "Website build and launch" in html and "৩,৫০০.০০€" in html  # noqa: RUF001 (Bengali digits)
        assert "কাজ শুরুর আগে অগ্রিম জমা" in html  # "deposit before work starts"
        assert 'name="name"' in html and 'method="post"' in html and v2["digest"] in html

        nameless = await anonymous.post(v2["acceptance_url"], data={"name": "   "})
        assert nameless.status_code == 422 and 'data-field="name"' in nameless.text and 'name="name"' in nameless.text
        assert as_json(await svc.client.get(f"/deals/{deal_id}"))["status"] == "proposed"

        accepted = await anonymous.post(v2["acceptance_url"], data={"name": "Rahim Uddin"})
        assert accepted.status_code == 200, accepted.text
        assert "Rahim Uddin" in accepted.text and 'lang="bn"' in accepted.text and "ধন্যবাদ" in accepted.text

        won = as_json(await svc.client.get(f"/deals/{deal_id}"))
        assert won["status"] == "won" and won["signed_by"] == "Rahim Uddin"
        assert (won["signed_via"], won["signed_ip"]) == ("link", "127.0.0.1")
        assert (won["accepted_version"], won["accepted_digest"]) == (2, v2["digest"])
        assert won["acceptance_url"] is None
        # The page showed the deposit win_deal asks: the share of the total.
        deposit = quantize(Decimal(won["total"]) * Decimal(won["deposit_share"]))
        assert format_money(deposit, "EUR", "bn") in html

        again = await anonymous.post(v2["acceptance_url"], data={"name": "Rahim Uddin"})
        assert again.status_code == 409 and 'class="already_accepted"' in again.text

        # A later event on the same lead (same partition, after any second deal.won).
        marker = as_json(await svc.client.post(f"/leads/{lead_id}/deals", json=estimate(LINES_V1)))
        await reader.wait_for("deal.proposed", lead_id=lead_id, count=2)
        assert reader.events("deal.proposed", lead_id)[1].data["deal_id"] == marker["deal_id"]
        (won_event,) = reader.events("deal.won", lead_id)
        data = won_event.data
        assert data["deal_id"] == deal_id and data["signed_by"] == "Rahim Uddin"
        assert (data["signed_via"], data["signed_ip"], data["version"], data["digest"]) == (
            "link",
            "127.0.0.1",
            2,
            v2["digest"],
        )
        assert Decimal(data["deposit_share"]) == Decimal(won["deposit_share"])

        # A won deal is no longer revised.
        late = await svc.client.post(f"/deals/{deal_id}/revisions", json=estimate(LINES_V1))
        assert late.status_code == 409 and "won" in late.text
        assert as_json(await svc.client.get(f"/leads/{lead_id}"))["stage"] == "decision"


async def test_an_expired_link_is_gone_and_staff_revise_before_winning(leads, kafka_bootstrap: str) -> None:
    svc, clock = leads
    anonymous = httpx.AsyncClient(timeout=30)
    async with anonymous, TopicReader(kafka_bootstrap, topics.DEALS) as reader:
        lead_id = as_json(await svc.client.post("/leads", json=lead("fa", "Dariush")))["lead_id"]
        deal = as_json(
            await svc.client.post(
                f"/leads/{lead_id}/deals",
                json=estimate(LINES_V1, valid_until=(clock.now() + timedelta(days=2)).isoformat()),
            )
        )
        deal_id = deal["deal_id"]
        page = await anonymous.get(deal["acceptance_url"])
        assert page.status_code == 200 and 'lang="fa"' in page.text and 'dir="rtl"' in page.text
        assert "می‌پذیرم و امضا می‌کنم" in page.text  # the Persian button

        clock.advance_to(clock.now() + timedelta(days=3))  # past valid_until
        expired = await anonymous.get(deal["acceptance_url"])
        assert expired.status_code == 410 and 'class="expired"' in expired.text and 'dir="rtl"' in expired.text
        late = await anonymous.post(deal["acceptance_url"], data={"name": "Dariush Karimi"})
        assert late.status_code == 410
        assert as_json(await svc.client.get(f"/deals/{deal_id}"))["status"] == "proposed"

        staff_late = await svc.client.post(f"/deals/{deal_id}/won", json={"signed_by": "Dariush Karimi"})
        assert staff_late.status_code == 409 and "valid_until" in staff_late.text and "revise" in staff_late.text
        assert as_json(await svc.client.get(f"/deals/{deal_id}"))["status"] == "proposed"

        revised = as_json(await svc.client.post(f"/deals/{deal_id}/revisions", json=estimate(LINES_V2)))
        assert revised["version"] == 2
        assert datetime.fromisoformat(revised["valid_until"]) == clock.now() + timedelta(days=30)
        won = as_json(await svc.client.post(f"/deals/{deal_id}/won", json={"signed_by": "Dariush Karimi"}))
        assert won["status"] == "won" and (won["signed_via"], won["signed_ip"]) == ("staff", None)
        assert (won["accepted_version"], won["accepted_digest"]) == (2, revised["digest"])
        # The client's link of the revision no longer opens an open estimate.
        closed = await anonymous.post(revised["acceptance_url"], data={"name": "Dariush Karimi"})
        assert closed.status_code == 409 and 'class="closed"' in closed.text

        (won_event,) = await reader.wait_for("deal.won", lead_id=lead_id)
        assert (won_event.data["signed_via"], won_event.data["signed_ip"]) == ("staff", None)
        assert (won_event.data["version"], won_event.data["digest"]) == (2, revised["digest"])
        # The stage follows a staff win as it follows a signature by link.
        assert as_json(await svc.client.get(f"/leads/{lead_id}"))["stage"] == "decision"

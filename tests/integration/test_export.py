"""An export of a person's data on request (right of access, issue 21 part 3), through all four
services in one process on the real broker and databases: a person walks a lifecycle (the welcome
e-mail, a won deal, the deposit paid, feedback, a note), an admin asks for an export, each service
contributes its part over the wire and the admin downloads one JSON document and a zip of the
e-mails. While retention is down the export waits for it (409 on the downloads, naming it); once
it is back the export completes. An erased person's export is gone (404), and so is an expired one."""

from __future__ import annotations

import email
import io
import json
import uuid
import zipfile
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from services.billing.app import create_app as billing_app
from services.billing.settings import Settings as BillingSettings
from services.leads.app import create_app as leads_app
from services.leads.settings import Settings as LeadsSettings
from services.leads.store import Export, ExportChunk
from services.nurture.app import create_app as nurture_app
from services.nurture.settings import Settings as NurtureSettings
from services.retention.app import create_app as retention_app
from services.retention.settings import Settings as RetentionSettings
from shared.embedded import free_port
from tests.access.support import add_person
from tests.conftest import fresh_database
from tests.integration.test_termination import ManualClock, bearer
from tests.support import as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration

# Business time starts at the wall clock's: audit rows are stamped with the wall clock, and the
# audit retention purge (on business time) would take rows from a far-future business day.
START = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def databases(_postgres_server, tmp_path):  # made before the event loop runs
    made = {
        name: fresh_database(_postgres_server, tmp_path, name) for name in ("leads", "nurture", "billing", "retention")
    }
    yield {name: next(gen) for name, gen in made.items()}
    for gen in made.values():
        for _ in gen:
            pass


async def test_an_export_holds_every_services_part(kafka_bootstrap: str, databases: dict[str, str], tmp_path) -> None:
    clock = ManualClock(START)
    tag = uuid.uuid4().hex[:8]
    common = {"bootstrap": kafka_bootstrap}
    leads_s = service_settings(LeadsSettings, database_url=databases["leads"], **common)
    nurture_s = service_settings(
        NurtureSettings,
        database_url=databases["nurture"],
        data_dir=tmp_path / "nurture",
        send_interval_s=0.1,
        quiet_hours_start=0,
        quiet_hours_end=0,
        **common,
    )
    billing_s = service_settings(BillingSettings, database_url=databases["billing"], **common)
    retention_s = service_settings(RetentionSettings, database_url=databases["retention"], **common)
    name, comment, note = f"Nasrin Talebi {tag}", f"Replies were slow in May {tag}", f"Prefers calls to e-mail {tag}"
    async with AsyncExitStack() as stack:
        leads = await stack.enter_async_context(run_service(leads_app(leads_s, clock=clock), leads_s.port))
        nurture = await stack.enter_async_context(run_service(nurture_app(nurture_s, clock=clock), nurture_s.port))
        billing = await stack.enter_async_context(run_service(billing_app(billing_s, clock=clock), billing_s.port))
        retention_down = AsyncExitStack()
        retention = await retention_down.enter_async_context(
            run_service(retention_app(retention_s, clock=clock), retention_s.port)
        )

        # The lifecycle: captured with consent (the welcome e-mail goes), a project won, its
        # deposit paid, feedback given, a note kept.
        created = as_json(
            await leads.client.post(
                "/leads",
                json={
                    "name": name,
                    "email": f"nasrin-{tag}@talebi-{tag}.example",
                    "company": "Talebi Studio",
                    "channel": "website",
                    "consent_marketing": True,
                    "budget": "9000",
                    "currency": "EUR",
                    "brief": "A new brand and website",
                    "needs": ["branding"],
                },
            )
        )
        lead_id = created["lead_id"]

        async def welcome() -> list[dict]:
            return as_json(await nurture.client.get(f"/leads/{lead_id}/messages"))

        (sent, *_) = await eventually(welcome, timeout=30)
        deal = as_json(
            await leads.client.post(
                f"/leads/{lead_id}/deals",
                json={
                    "title": f"Brand refresh {tag}",
                    "kind": "project",
                    "currency": "EUR",
                    "lines": [{"description": "Logo and brand book", "amount": "4000"}],
                },
            )
        )
        as_json(await leads.client.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": name}))

        async def deposit() -> list[dict]:
            return as_json(await billing.client.get("/invoices", params={"lead_id": lead_id}))

        (invoice,) = await eventually(deposit, timeout=30)
        paid = await billing.client.post(
            "/payments",
            json={
                "invoice_id": invoice["invoice_id"],
                "amount": invoice["amount"],
                "currency": "EUR",
                "method": "bank_transfer",
                "reference": f"TRF-{tag}",
            },
        )
        assert paid.status_code in (200, 201), paid.text
        given = await nurture.client.post(
            "/feedback", json={"lead_id": lead_id, "survey": "onboarding", "score": 4, "comment": comment}
        )
        assert given.status_code == 201, given.text

        async def a_client() -> bool:
            found = await retention.client.get(f"/clients/{lead_id}")
            return found.status_code == 200 and found.json()["became_client_at"] is not None

        await eventually(a_client, timeout=30)
        kept = await retention.client.post(f"/clients/{lead_id}/notes", json={"text": note, "tags": ["great_partner"]})
        assert kept.status_code == 201, kept.text
        as_json(await leads.client.get(f"/leads/{lead_id}"))  # a read of the person: audited

        # Who may: an admin only.
        _, sales = await add_person(leads.runtime.uow.sessions, "sales")
        refused = await leads.client.post(f"/leads/{lead_id}/export", headers=bearer(sales))
        assert refused.status_code == 403 and "exports.run" in refused.text
        unknown = await leads.client.get(f"/exports/{uuid.uuid4()}")
        assert unknown.status_code == 404
        assert (await leads.client.post(f"/leads/{uuid.uuid4()}/export")).status_code == 404

        # Retention is down: the export gathers the others and waits for it.
        await retention_down.aclose()
        asked = await leads.client.post(f"/leads/{lead_id}/export")
        assert asked.status_code == 202, asked.text
        export = asked.json()
        export_id = export["export_id"]
        assert asked.headers["location"] == f"/exports/{export_id}"
        assert export["status"] == "gathering" and export["services"]["leads"] == "done"
        assert export["download_url"] is None and export["requested_by"]["role"] == "admin"
        assert datetime.fromisoformat(export["expires_at"]) == START + timedelta(days=7)

        async def all_but_retention() -> dict | None:
            body = as_json(await leads.client.get(f"/exports/{export_id}"))
            return body if body["progress"] == "3/4" else None

        waiting = await eventually(all_but_retention, timeout=30)
        assert waiting["services"] == {"leads": "done", "nurture": "done", "billing": "done", "retention": "pending"}
        for path in ("download", "mail.zip"):
            early = await leads.client.get(f"/exports/{export_id}/{path}")
            assert early.status_code == 409 and "retention" in early.json()["detail"] and "3/4" in early.text

        # Retention is back: it answers the request it missed, and the export is complete.
        retention_s = retention_s.model_copy(update={"port": free_port()})
        retention = await stack.enter_async_context(
            run_service(retention_app(retention_s, clock=clock), retention_s.port)
        )

        async def complete() -> dict | None:
            body = as_json(await leads.client.get(f"/exports/{export_id}"))
            return body if body["status"] == "complete" else None

        done = await eventually(complete, timeout=45)
        assert done["progress"] == "4/4" and set(done["services"].values()) == {"done"}
        assert done["download_url"] == f"/exports/{export_id}/download"
        assert done["mail_url"] == f"/exports/{export_id}/mail.zip"

        # The document: one object per service, each with what it holds.
        downloaded = await leads.client.get(done["download_url"])
        assert downloaded.status_code == 200, downloaded.text
        assert "attachment" in downloaded.headers["content-disposition"]
        document = downloaded.json()
        assert (document["format"], document["format_version"]) == ("clientflow.export", 1)
        assert document["lead_id"] == lead_id and document["export_id"] == export_id
        assert document["requested_by"]["kind"] == "integration" and document["completed_at"]
        parts = document["services"]
        assert list(parts) == ["leads", "nurture", "billing", "retention"]
        assert all(parts[s]["service"] == s and parts[s]["gathered_at"] for s in parts)

        mine = parts["leads"]
        assert mine["lead"]["name"] == name and isinstance(mine["lead"]["budget"], str)
        assert Decimal(mine["lead"]["budget"]) == Decimal("9000")
        assert mine["touches"] and mine["stage_history"] and mine["activity"]
        (their_deal,) = mine["deals"]
        assert their_deal["title"] == f"Brand refresh {tag}" and their_deal["signed_by"] == name
        assert their_deal["estimate_versions"][0]["version"] == 1
        assert mine["account"]["name"] == "Talebi Studio"
        assert any(row["action"] == "GET /leads/{lead_id}" for row in mine["audit"])

        nurtured = parts["nurture"]
        assert nurtured["contact"]["name"] == name and nurtured["contact"]["consent_marketing"] is True
        assert sent["subject"] in [m["subject"] for m in nurtured["messages"]]
        assert [f["comment"] for f in nurtured["feedback"]] == [comment]
        assert nurtured["consent_history"][0]["kind"] == "grant"
        assert any(row["action"] == "GET /leads/{lead_id}/messages" for row in nurtured["audit"])

        billed = parts["billing"]
        (deposit_invoice,) = billed["invoices"]
        assert deposit_invoice["number"] == invoice["number"] and deposit_invoice["lines"]
        assert isinstance(deposit_invoice["amount"], str)  # money as decimal strings
        assert Decimal(deposit_invoice["amount"]) == Decimal(invoice["amount"])
        assert [p["reference"] for p in billed["payments"]] == [f"TRF-{tag}"]
        assert billed["deposits"][0]["cleared_at"] and billed["account"]["contact_name"] == name

        kept_part = parts["retention"]
        assert kept_part["client"]["lead_id"] == lead_id and kept_part["client"]["became_client_at"]
        assert [n["text"] for n in kept_part["notes"]] == [note]
        assert kept_part["timeline"] and kept_part["money"]
        assert any(row["action"] == "POST /clients/{lead_id}/notes" for row in kept_part["audit"]), kept_part["audit"]

        # The e-mails as they went out, in a zip.
        archive = await leads.client.get(done["mail_url"])
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
            assert sorted(opened.namelist()) == sorted(document["mail"]) and opened.namelist()
            subjects = [email.message_from_bytes(opened.read(n))["Subject"] for n in opened.namelist()]
        assert sent["subject"] in subjects

        # Every step is in the audit trail, with the person.
        await leads.runtime.audit.flush()
        trail = as_json(await leads.client.get("/audit", params={"lead_id": lead_id, "limit": 500}))["items"]
        actions = {row["action"] for row in trail}
        assert {
            "POST /leads/{lead_id}/export",
            "GET /exports/{export_id}",
            "GET /exports/{export_id}/download",
            "GET /exports/{export_id}/mail.zip",
        } <= actions
        metrics = (await leads.client.get("/metrics")).text
        assert "clientflow_leads_exports_requested_total" in metrics
        assert "clientflow_leads_exports_completed_total 1.0" in metrics

        # Erased: the export goes with the person, and a new one is refused.
        assert (await leads.client.delete(f"/leads/{lead_id}")).status_code == 200
        for path in ("", "/download", "/mail.zip"):
            assert (await leads.client.get(f"/exports/{export_id}{path}")).status_code == 404
        again = await leads.client.post(f"/leads/{lead_id}/export")
        assert again.status_code == 404 and "erased" in again.json()["detail"]
        async with leads.runtime.uow() as tx:
            left = await tx.session.scalar(
                select(func.count()).select_from(ExportChunk).where(ExportChunk.export_id == uuid.UUID(export_id))
            )
        assert left == 0

        # Expired: an export is kept LEADS_EXPORT_RETENTION_DAYS (7), then purged.
        other = as_json(
            await leads.client.post(
                "/leads", json={"name": f"Omid {tag}", "email": f"omid-{tag}@example.org", "channel": "website"}
            )
        )
        later = as_json(await leads.client.post(f"/leads/{other['lead_id']}/export"))

        async def later_complete() -> bool:
            return as_json(await leads.client.get(f"/exports/{later['export_id']}"))["status"] == "complete"

        await eventually(later_complete, timeout=45)
        clock.advance_to(START + timedelta(days=8))
        assert (await leads.client.get(f"/exports/{later['export_id']}")).status_code == 404

        async def purged() -> bool:
            async with leads.runtime.uow() as tx:
                return await tx.session.get(Export, uuid.UUID(later["export_id"])) is None

        await eventually(purged, timeout=20)
        json.dumps(document)  # the document is plain JSON throughout

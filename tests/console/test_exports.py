"""An admin exports a person's data from the console: the lead page's button asks leads for the
export, the export's page shows each service's progress (looking again every few seconds) and,
once complete, the two downloads, passed on from leads without the token reaching the browser."""

from __future__ import annotations

import httpx

from tests.console.fakes import LEAD_ID, Services, signed_in

EXPORT_ID = "5f0c2a7e-3b1d-4e8a-9c6f-2d7b8e1a4c90"


def export_state(complete: bool) -> dict:
    services = {"leads": "done", "nurture": "done", "billing": "done", "retention": "done" if complete else "pending"}
    return {
        "export_id": EXPORT_ID,
        "lead_id": LEAD_ID,
        "status": "complete" if complete else "gathering",
        "services": services,
        "progress": "4/4" if complete else "3/4",
        "requested_at": "2026-12-06T10:00:00Z",
        "completed_at": "2026-12-06T10:00:05Z" if complete else None,
    }


def with_export(services: Services, *, complete: bool) -> None:
    services.overrides[("leads", "POST", f"/leads/{LEAD_ID}/export")] = lambda _r: httpx.Response(
        202, json={"export_id": EXPORT_ID}
    )
    services.overrides[("leads", "GET", f"/exports/{EXPORT_ID}")] = lambda _r: httpx.Response(
        200, json=export_state(complete)
    )
    if complete:
        services.overrides[("leads", "GET", f"/exports/{EXPORT_ID}/download")] = lambda _r: httpx.Response(
            200,
            content=b'{"format": "clientflow.export"}',
            headers={"content-type": "application/json", "content-disposition": 'attachment; filename="export.json"'},
        )
    else:
        services.overrides[("leads", "GET", f"/exports/{EXPORT_ID}/download")] = lambda _r: httpx.Response(
            409, json={"detail": "the export is not complete: waiting for retention"}
        )


def test_an_admin_asks_for_an_export_and_watches_it_come_together() -> None:
    services = Services()
    with_export(services, complete=False)
    client, csrf = signed_in(services, "admin")
    page = client.get(f"/leads/{LEAD_ID}")
    assert f'action="/leads/{LEAD_ID}/export"' in page.text
    asked = client.post(f"/leads/{LEAD_ID}/export", data={"csrf": csrf})
    assert asked.status_code == 303 and asked.headers["location"] == f"/exports/{EXPORT_ID}"
    assert ("leads", "POST", f"/leads/{LEAD_ID}/export") in services.writes()
    gathering = client.get(f"/exports/{EXPORT_ID}")
    assert gathering.status_code == 200
    assert "3/4" in gathering.text and "pending" in gathering.text
    assert 'http-equiv="refresh"' in gathering.text and "/download" not in gathering.text
    early = client.get(f"/exports/{EXPORT_ID}/download")
    assert early.status_code == 409 and "waiting for retention" in early.text
    client.__exit__(None, None, None)


def test_a_complete_export_is_downloaded_through_the_console() -> None:
    services = Services()
    with_export(services, complete=True)
    client, _ = signed_in(services, "admin")
    done = client.get(f"/exports/{EXPORT_ID}")
    assert "4/4" in done.text and 'http-equiv="refresh"' not in done.text
    assert f"/exports/{EXPORT_ID}/download" in done.text and f"/exports/{EXPORT_ID}/mail.zip" in done.text
    document = client.get(f"/exports/{EXPORT_ID}/download")
    assert document.status_code == 200 and document.content == b'{"format": "clientflow.export"}'
    assert document.headers["content-disposition"] == 'attachment; filename="export.json"'
    token = next(t for s, m, p, t, _b in services.calls if p.endswith("/download"))
    assert token not in document.text and token not in done.text
    assert client.get(f"/exports/{EXPORT_ID}/anything").status_code == 404
    client.__exit__(None, None, None)


def test_only_an_admin_exports() -> None:
    services = Services()
    with_export(services, complete=True)
    client, csrf = signed_in(services, "sales")
    assert f"/leads/{LEAD_ID}/export" not in client.get(f"/leads/{LEAD_ID}").text
    assert client.post(f"/leads/{LEAD_ID}/export", data={"csrf": csrf}).status_code == 403
    assert client.get(f"/exports/{EXPORT_ID}").status_code == 403
    assert client.get(f"/exports/{EXPORT_ID}/download").status_code == 403
    assert not [c for c in services.calls if "/export" in c[2]]
    client.__exit__(None, None, None)


def test_the_export_page_reads_in_persian() -> None:
    services = Services()
    with_export(services, complete=False)
    client, _ = signed_in(services, "admin", languages=("fa",))
    page = client.get(f"/exports/{EXPORT_ID}")
    assert 'dir="rtl"' in page.text and "برون‌بری داده‌های یک شخص" in page.text and "در انتظار" in page.text
    client.__exit__(None, None, None)

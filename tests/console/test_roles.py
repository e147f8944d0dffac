"""What a person sees and may press follows their role, as the services' /me tells it."""

from __future__ import annotations

import httpx
import pytest

from tests.console.fakes import DEAL_ID, INVOICE_ID, LEAD_ID, Services, signed_in


def test_a_viewer_sees_the_reports_but_never_a_person() -> None:
    services = Services()
    client, _ = signed_in(services, "viewer")
    pipeline = client.get("/pipeline")
    assert pipeline.status_code == 200
    assert 'href="/clients"' not in pipeline.text and "Grace Hopper" not in pipeline.text
    assert "figures only" in pipeline.text
    for path in (
        f"/leads/{LEAD_ID}",
        "/clients",
        f"/clients/{LEAD_ID}",
        "/invoices",
        "/review",
        "/tasks",
        "/sequences",
    ):
        page = client.get(path)
        assert page.status_code == 403, path
        assert "Not allowed" in page.text and "Grace Hopper" not in page.text
    assert client.get("/economics").status_code == 200
    # The console did not even ask for the people behind the figures.
    assert not [c for c in services.calls if c[2] in ("/leads", f"/leads/{LEAD_ID}", "/clients")]
    client.__exit__(None, None, None)


def test_sales_sees_the_lead_and_its_actions_but_not_finances_or_erasure() -> None:
    services = Services()
    client, _ = signed_in(services, "sales")
    page = client.get(f"/leads/{LEAD_ID}")
    assert page.status_code == 200
    assert "Grace Hopper" in page.text and "tiny_budget" in page.text and "budget 500" in page.text
    assert f"/leads/{LEAD_ID}/deals/{DEAL_ID}/won" in page.text
    assert f"/leads/{LEAD_ID}/estimate" in page.text and f"/leads/{LEAD_ID}/qualify" in page.text
    assert "/payment" not in page.text and f"/leads/{LEAD_ID}/erase" not in page.text
    client.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("role", "path", "allowed"),
    [
        ("sales", f"/invoices/{INVOICE_ID}/payment", False),
        ("finance", f"/invoices/{INVOICE_ID}/payment", True),
        ("finance", f"/leads/{LEAD_ID}/deals/{DEAL_ID}/won", False),
        ("success", f"/clients/{LEAD_ID}/cancellation", True),
        ("sales", f"/clients/{LEAD_ID}/cancellation", False),
        ("sales", f"/leads/{LEAD_ID}/erase", False),
        ("admin", f"/leads/{LEAD_ID}/erase", True),
        ("viewer", f"/leads/{LEAD_ID}/qualify", False),
    ],
)
def test_a_post_the_role_may_not_make_is_refused_before_any_service_hears_of_it(
    role: str, path: str, allowed: bool
) -> None:
    services = Services()
    client, csrf = signed_in(services, role)
    answer = client.post(
        path,
        data={
            "csrf": csrf,
            "amount": "900",
            "currency": "USD",
            "method": "cash",
            "reason": "price",
            "confirm": "ERASE",
            "signed_by": "Grace",
        },
    )
    if allowed:
        assert answer.status_code == 303, answer.text
        assert services.writes()
    else:
        assert answer.status_code == 403 and "may not" in answer.text
        assert services.writes() == []
    client.__exit__(None, None, None)


def test_erasing_needs_the_typed_confirmation() -> None:
    services = Services()
    client, csrf = signed_in(services, "admin")
    answer = client.post(f"/leads/{LEAD_ID}/erase", data={"csrf": csrf, "confirm": "yes"})
    assert answer.status_code == 422 and "type ERASE" in answer.text
    assert services.writes() == []
    client.__exit__(None, None, None)


def test_a_payment_carries_the_forms_idempotency_key() -> None:
    services = Services()
    keys: list[str | None] = []

    def payments(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        return httpx.Response(201, json={"payment_id": "p1"})

    services.overrides[("billing", "POST", "/payments")] = payments
    client, csrf = signed_in(services, "finance")
    page = client.get(f"/leads/{LEAD_ID}")
    assert 'name="idempotency_key"' in page.text
    client.post(
        f"/invoices/{INVOICE_ID}/payment",
        data={
            "csrf": csrf,
            "amount": "900",
            "currency": "usd",
            "method": "cash",
            "idempotency_key": "console-k1",
            "lead_id": LEAD_ID,
            "from": "lead",
        },
    )
    (call,) = [c for c in services.calls if c[1] == "POST"]
    assert call[2] == "/payments" and call[4]["currency"] == "USD" and call[4]["invoice_id"] == INVOICE_ID
    assert keys == ["console-k1"]
    client.__exit__(None, None, None)

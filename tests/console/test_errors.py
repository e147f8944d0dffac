"""Errors a person understands: a service's 4xx next to the field it names, with what was typed
kept; a service that does not answer named, and the rest of the page still there."""

from __future__ import annotations

import httpx
import pytest

from console.backend import GENERAL, map_errors
from tests.console.fakes import DEAL_ID, LEAD_ID, Services, signed_in


@pytest.mark.parametrize(
    ("detail", "fields", "expected"),
    [
        (
            [{"loc": ["body", "lines", 1, "amount"], "msg": "Input should be a valid decimal"}],
            (),
            {"lines.1.amount": "Input should be a valid decimal"},
        ),
        (
            [{"loc": ["body", "signed_by"], "msg": "too short"}, {"loc": ["body", "signed_by"], "msg": "not a name"}],
            (),
            {"signed_by": "too short; not a name"},
        ),
        ([{"loc": ["query", "owner"], "msg": "bad"}], (), {"owner": "bad"}),
        ([{"loc": ["body"], "msg": "Field required"}], (), {GENERAL: "Field required"}),
        (
            "amount must be greater than zero",
            ("invoice_id", "amount", "currency"),
            {"amount": "amount must be greater than zero"},
        ),
        ("owner: 'me' needs a person's token", ("owner",), {"owner": "owner: 'me' needs a person's token"}),
        # The first field the sentence names, whole words only.
        (
            "currency EUR does not match the invoice's amount",
            ("amount", "currency"),
            {"currency": "currency EUR does not match the invoice's amount"},
        ),
        ("the deal is already won", ("reason",), {GENERAL: "the deal is already won"}),
        (None, (), {GENERAL: "the request was refused"}),
    ],
)
def test_a_services_detail_lands_on_the_field_it_names(
    detail: object, fields: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert map_errors(detail, fields) == expected


def test_a_422_is_shown_next_to_its_field_and_the_typing_is_kept() -> None:
    services = Services()
    services.overrides[("leads", "POST", f"/leads/{LEAD_ID}/deals")] = lambda r: httpx.Response(
        422, json={"detail": [{"loc": ["body", "lines", 0, "amount"], "msg": "Input should be a valid decimal"}]}
    )
    client, csrf = signed_in(services, "sales")
    answer = client.post(
        f"/leads/{LEAD_ID}/estimate",
        data={
            "csrf": csrf,
            "title": "Site",
            "kind": "project",
            "currency": "usd",
            "line_description": ["Design", ""],
            "line_amount": ["lots", ""],
            "line_hours": ["", ""],
        },
    )
    assert answer.status_code == 422
    html = answer.text
    amount_input = html.index('id="line-0-amount"')
    error = html.index("Input should be a valid decimal")
    assert amount_input < error < html.index('id="line-1-description"')  # right after that field
    assert 'value="lots"' in html and 'value="Design"' in html and "<details open>" in html
    sent = next(c[4] for c in services.calls if c[1] == "POST")
    assert sent["lines"] == [{"description": "Design", "amount": "lots", "hours": None}] and sent["currency"] == "USD"
    client.__exit__(None, None, None)


def test_a_sentence_from_the_service_sits_under_the_field_it_names() -> None:
    services = Services()
    services.overrides[("leads", "POST", f"/deals/{DEAL_ID}/won")] = lambda r: httpx.Response(
        422, json={"detail": "signed_by must name a person, not a company"}
    )
    client, csrf = signed_in(services, "sales")
    answer = client.post(f"/leads/{LEAD_ID}/deals/{DEAL_ID}/won", data={"csrf": csrf, "signed_by": "ACME"})
    assert answer.status_code == 422
    assert f'id="won-{DEAL_ID}-signed_by-error"' in answer.text
    assert f'aria-describedby="won-{DEAL_ID}-signed_by-error"' in answer.text
    client.__exit__(None, None, None)


def test_a_service_that_is_down_is_named_and_the_rest_of_the_page_works() -> None:
    services = Services()
    client, _ = signed_in(services, "admin")
    services.down = {"billing", "nurture"}
    page = client.get(f"/leads/{LEAD_ID}")
    assert page.status_code == 200
    assert "The billing service is not answering" in page.text
    assert "The nurture service is not answering" in page.text
    assert "Grace Hopper" in page.text and "Content retainer" in page.text
    services.down = {"leads"}
    pipeline = client.get("/pipeline")
    assert pipeline.status_code == 200 and "The leads service is not answering" in pipeline.text
    client.__exit__(None, None, None)


def test_an_action_whose_service_is_down_says_so_and_changes_nothing() -> None:
    services = Services()
    client, csrf = signed_in(services, "sales")
    services.down = {"nurture"}
    answer = client.post(f"/leads/{LEAD_ID}/takeover", data={"csrf": csrf, "by": "Pat"})
    assert answer.status_code == 503
    assert "nurture service did not answer; nothing was changed" in answer.text
    client.__exit__(None, None, None)


def test_a_sequence_edit_refused_is_shown_in_place() -> None:
    services = Services()
    services.overrides[("nurture", "GET", "/sequences")] = lambda r: httpx.Response(
        200,
        json=[
            {
                "name": "welcome",
                "source": "builtin",
                "trigger": "lead.captured",
                "category": "marketing",
                "definition": {"steps": []},
            }
        ],
    )
    services.overrides[("nurture", "PUT", "/sequences/welcome")] = lambda r: httpx.Response(
        422, json={"detail": "trigger lead.nope is not an event nurture hears"}
    )
    client, csrf = signed_in(services, "admin")
    bad_json = client.post("/sequences/welcome", data={"csrf": csrf, "definition": "{not json"})
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.text and "{not json" in bad_json.text
    refused = client.post("/sequences/welcome", data={"csrf": csrf, "definition": '{"trigger": "lead.nope"}'})
    assert refused.status_code == 422 and "trigger lead.nope is not an event" in refused.text
    assert 'id="def-welcome-error"' in refused.text and "<details open>" in refused.text
    client.__exit__(None, None, None)

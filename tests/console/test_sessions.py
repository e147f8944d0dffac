"""Sign-in, the session cookie, CSRF on every form, sign-out, and where a sign-in may lead."""

from __future__ import annotations

import uuid

import pytest
from starlette.routing import Route

from console import actions, auth, pages
from console.sessions import COOKIE, SessionStore
from tests.console.fakes import LEAD_ID, Services, console, csrf_of, me, signed_in


def test_a_valid_token_signs_in_with_a_new_httponly_lax_session() -> None:
    services = Services(tokens={"tok-sales": me("sales", name="Sam")})
    with console(services) as client:
        page = client.get("/login")
        anonymous = client.cookies[COOKIE]
        assert 'name="token"' in page.text and '<label for="token">' in page.text
        answer = client.post("/login", data={"csrf": csrf_of(page.text), "token": "tok-sales", "next": "/pipeline"})
        assert answer.status_code == 303 and answer.headers["location"] == "/pipeline"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # development
        assert client.cookies[COOKIE] != anonymous  # a new session id at sign-in (no fixation)
        pipeline = client.get("/pipeline")
        assert pipeline.status_code == 200 and "Sam" in pipeline.text
    # The console asked who the token is, with the token itself.
    assert ("leads", "GET", "/me", "tok-sales") in [(s, m, p, t) for s, m, p, t, _ in services.calls]


def test_outside_development_the_cookie_is_secure() -> None:
    services = Services()
    with console(services, environment="production", secret_key="a-real-secret-for-tests") as client:
        assert "Secure" in client.get("/login").headers["set-cookie"]


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        console(Services(), environment="production")


@pytest.mark.parametrize(("status", "says"), [(401, "not valid"), (None, "no service answered")])
def test_a_bad_token_or_no_service_is_a_message_on_the_form(status: int | None, says: str) -> None:
    services = Services(down={"leads", "nurture", "billing", "retention"} if status is None else set())
    with console(services) as client:
        page = client.get("/login")
        answer = client.post("/login", data={"csrf": csrf_of(page.text), "token": "nobody"})
        assert answer.status_code == (401 if status else 503)
        assert says in answer.text and 'aria-invalid="true"' in answer.text
        assert client.get("/pipeline").headers["location"].startswith("/login")


def test_an_empty_token_names_the_field() -> None:
    with console(Services()) as client:
        answer = client.post("/login", data={"csrf": csrf_of(client.get("/login").text), "token": " "})
        assert answer.status_code == 422 and "token:" in answer.text


def test_the_sign_in_form_needs_its_csrf_token_too() -> None:
    services = Services(tokens={"tok": me("sales")})
    with console(services) as client:
        client.get("/login")
        assert client.post("/login", data={"token": "tok"}).status_code == 403
    assert services.calls == []  # refused before asking anyone


def test_every_form_of_the_console_refuses_a_post_without_its_csrf_token() -> None:
    services = Services()
    client, csrf = signed_in(services, "admin")
    routes = [r for router in (auth.router, pages.router, actions.router) for r in router.routes]
    posts = [r.path for r in routes if isinstance(r, Route) and "POST" in (r.methods or set())]
    assert len(posts) >= 17, posts
    for path in posts:
        url = path.format(
            **{name: str(uuid.uuid4()) for name in ("lead_id", "deal_id", "invoice_id", "cancellation_id", "task_id")},
            decision="confirm",
            name="welcome",
        )
        for form in ({"reason": "price"}, {"reason": "price", "csrf": "forged"}):
            answer = client.post(url, data=form)
            assert answer.status_code == 403, (url, answer.status_code)
            assert "CSRF" in answer.text
    assert services.writes() == []
    # With its token, the same form goes through.
    ok = client.post(f"/leads/{LEAD_ID}/takeover", data={"csrf": csrf, "by": "Pat"})
    assert ok.status_code == 303
    client.__exit__(None, None, None)


def test_signing_out_ends_the_session_for_a_copied_cookie_too() -> None:
    services = Services()
    client, csrf = signed_in(services, "sales")
    copied = client.cookies[COOKIE]
    assert client.post("/logout", data={"csrf": csrf}).headers["location"] == "/login"
    client.cookies.set(COOKIE, copied)
    assert client.get("/pipeline").headers["location"].startswith("/login")
    client.__exit__(None, None, None)


def test_a_forged_or_altered_cookie_is_an_unknown_visitor() -> None:
    store = SessionStore("secret", idle_s=60, max_s=600)
    session = store.new()
    value = store.cookie_value(session)
    assert store.from_cookie(value) is session
    assert store.from_cookie(value[:-2] + "xx") is None
    assert SessionStore("another", idle_s=60, max_s=600).from_cookie(value) is None
    store.drop(session)
    assert store.from_cookie(value) is None


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", ""])
def test_after_sign_in_only_a_page_of_the_console(target: str) -> None:
    services = Services(tokens={"tok": me("sales")})
    with console(services) as client:
        page = client.get("/login")
        answer = client.post("/login", data={"csrf": csrf_of(page.text), "token": "tok", "next": target})
        assert answer.headers["location"] == "/pipeline"


def test_a_page_asked_signed_out_comes_back_after_sign_in() -> None:
    with console(Services()) as client:
        answer = client.get(f"/leads/{LEAD_ID}?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/login?next=/leads/{LEAD_ID}%3Fx%3D1"


def test_a_flood_of_visitors_without_cookies_does_not_push_out_the_signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from console import sessions

    monkeypatch.setattr(sessions, "MAX_SESSIONS", 5)
    store = SessionStore("secret", idle_s=60, max_s=600)
    person = store.new()
    person.token = "tok"
    for _ in range(20):
        store.new()
    assert len(store) == 5
    assert store.from_cookie(store.cookie_value(person)) is person


def test_a_page_that_fails_is_an_error_page_not_a_stack_trace() -> None:
    import httpx

    services = Services()
    services.overrides[("leads", "GET", f"/leads/{LEAD_ID}")] = lambda r: httpx.Response(200, json={"lead_id": LEAD_ID})
    client, _ = signed_in(services, "sales")
    from fastapi.testclient import TestClient

    safe = TestClient(client.app, base_url="http://console.test", follow_redirects=False, raise_server_exceptions=False)
    safe.cookies = client.cookies
    page = safe.get(f"/leads/{LEAD_ID}")
    assert page.status_code == 500
    assert "the console failed to show this page" in page.text and "Traceback" not in page.text
    client.__exit__(None, None, None)


def test_the_sign_in_page_of_someone_signed_in_goes_on_to_the_pipeline() -> None:
    client, _ = signed_in(Services(), "sales")
    assert client.get("/login").headers["location"] == "/pipeline"
    client.__exit__(None, None, None)

"""The web console in a real browser (Debian's chromium, driven by Playwright) against the
whole system as `clientflow run` starts it: a lead walked from capture to a paid deposit and a
cancellation with its save offer, each step by the person whose role does it; a viewer kept
from a person's page; a forged form refused. Every page is photographed in English and
Persian into docs/console/ (the README shows them)."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.test_access import add
from tests.support import API_KEY

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"

# Never skipped: `make test` installs Debian's chromium (`make tools`) and playwright is a pinned
# test dependency, so a missing browser is a failed setup to see, not a test to pass over.
if not Path(CHROMIUM).exists():  # pragma: no cover - `make tools` installs it
    pytest.fail("Debian's chromium is not installed: run `make tools` (make test does)", pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser, console: str, token: str, *, width: int = 1280, lang: str = "en"):
    page = browser.new_page(viewport={"width": width, "height": 900}, locale="en-GB")
    page.set_default_timeout(20_000)
    page.goto(f"{console}/login")
    page.get_by_label("Token").fill(token)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/pipeline"))
    if lang != "en":
        page.select_option("#lang-switch", lang)
        page.locator("form[action='/language'] button").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == lang
    return page


def until_shown(page, url: str, selector: str, *, text: str | None = None, timeout: float = 40.0) -> None:
    """Reload ``url`` until ``selector`` (with ``text``) is on the page: what the other services do
    with an event arrives within seconds, not at once."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        found = page.locator(selector)
        if text is not None:
            found = found.filter(has_text=text)
        if found.count() > 0:
            return
        assert time.monotonic() < deadline, (
            f"{selector!r} {text or ''} never showed on {url}:\n{page.inner_text('main')[:2000]}"
        )
        time.sleep(0.5)


def capture_lead(system) -> str:
    response = httpx.post(
        f"{system.urls['leads']}/leads",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={
            "name": "Ada Lovelace",
            "email": f"ada-{uuid.uuid4().hex[:8]}@engines.example",
            "company": "Analytical Engines",
            "job_title": "CEO",
            "industry": "software",
            "employees": 40,
            "country": "GB",
            "channel": "referral",
            "budget": "15000",
            "currency": "USD",
            "brief": "Monthly content and SEO",
            "timeline": "next month",
            "needs": ["seo", "content"],
            "consent_marketing": True,
            "legal_basis": "consent",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["lead_id"])


def test_a_lead_from_capture_to_a_paid_deposit_and_a_save_offer_in_the_browser(system, browser) -> None:
    printed = (system.data_dir / "run.log").read_text(errors="replace")
    assert f"console    {system.console}" in printed, printed[-1500:]
    tag = uuid.uuid4().hex[:6]
    tokens = {
        role: add(system, f"{role}-{tag}@agency.example", role) for role in ("sales", "finance", "success", "viewer")
    }
    lead_id = capture_lead(system)
    lead_url = f"{system.console}/leads/{lead_id}"

    # Sales: open the lead, qualify it, make an estimate (a refusal first, shown at its field), win it.
    page = sign_in(browser, system.console, tokens["sales"])
    until_shown(page, lead_url, "h1", text="Ada Lovelace")
    for field in ("budget", "authority", "need", "timeline"):
        page.select_option(f"#qualify-{field}", "yes")
    page.get_by_role("button", name="Qualify").click()
    page.wait_for_url(re.compile(r"done=qualified"))
    assert "The lead is qualified." in page.inner_text("main")

    page.locator("summary", has_text="New estimate").click()
    page.get_by_label("Title").fill("Content retainer")
    page.select_option("#estimate-kind", "retainer")
    page.get_by_label("Monthly fee (retainer)").fill("3000")
    page.get_by_label("Hours included a month (retainer)").fill("10")
    page.get_by_label("Hourly rate").fill("150")
    page.locator("#line-0-description").fill("SEO and content")
    page.locator("#line-0-amount").fill("three thousand")
    page.get_by_role("button", name="Make the estimate").click()
    # The service's 422 for lines[0].amount, next to that very field, with what was typed kept.
    error = page.locator("#line-0-amount ~ .field-error")
    assert "decimal" in error.inner_text().lower()
    assert page.locator("#line-0-description").input_value() == "SEO and content"
    page.locator("#line-0-amount").fill("3000")
    page.get_by_role("button", name="Make the estimate").click()
    page.wait_for_url(re.compile(r"done=estimate"))
    assert page.locator("article.deal h3", has_text="Content retainer").count() == 1

    page.get_by_label("Signed by").fill("Ada Lovelace")
    page.get_by_role("button", name="Mark won").click()
    page.wait_for_url(re.compile(r"done=won"))
    assert page.locator("article.deal .pill", has_text="won").count() == 1
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))
    page.close()

    # Finance: the deposit invoice billing issued at the win, paid by hand; the work is authorised.
    page = sign_in(browser, system.console, tokens["finance"])
    until_shown(page, lead_url, "form.payment")
    page.locator("form.payment").first.get_by_role("button", name="Record payment").click()
    page.wait_for_url(re.compile(r"done=paid"))
    until_shown(page, lead_url, "[data-testid=authorization]", text="Work authorised")
    page.close()

    # Success: the client's cancellation, and the save offer retention makes.
    page = sign_in(browser, system.console, tokens["success"])
    client_url = f"{system.console}/clients/{lead_id}"
    until_shown(page, client_url, "#cancel-reason")
    page.select_option("#cancel-reason", "budget_cut")
    page.get_by_label("Comment").fill("cutting costs this quarter")
    page.get_by_role("button", name="Start a cancellation").click()
    offer = page.locator("[data-testid=save-offer]")
    offer.wait_for()
    assert "Save offer" in offer.inner_text()
    assert page.get_by_role("button", name="The client accepts the offer").count() == 1
    assert page.get_by_role("button", name="Confirm the cancellation").count() == 1

    # A forged form (this browser's own session cookie, no CSRF token; then a wrong one): refused.
    forged = page.request.post(f"{client_url}/cancellation", form={"reason": "price"})
    assert forged.status == 403, forged.text()
    assert "CSRF" in forged.text()
    wrong = page.request.post(f"{client_url}/cancellation", form={"reason": "price", "csrf": "not-the-token"})
    assert wrong.status == 403
    page.close()

    # A viewer sees the reports, never a person.
    page = sign_in(browser, system.console, tokens["viewer"])
    assert page.locator("nav a", has_text="Clients").count() == 0
    response = page.goto(lead_url)
    assert response is not None and response.status == 403
    assert "Not allowed" in page.inner_text("main")
    assert "Ada Lovelace" not in page.content()
    response = page.goto(f"{system.console}/clients/{lead_id}")
    assert response is not None and response.status == 403
    page.goto(f"{system.console}/pipeline")
    assert page.locator(".stage .count").count() > 0 and page.locator(".leads a").count() == 0
    page.close()

    # An admin edits a sequence: nurture's refusal shows in place, and the sequence is unchanged.
    page = sign_in(browser, system.console, API_KEY)
    until_shown(page, f"{system.console}/sequences", "#seq-welcome")
    page.locator("#seq-welcome ~ details summary").click()
    editor = page.locator("#def-welcome")
    original = editor.input_value()
    editor.fill(original.replace('"lead.captured"', '"no.such.event"', 1))
    page.locator("form[action='/sequences/welcome'] button").click()
    assert "no.such.event" in page.locator("#def-welcome-error").inner_text()
    assert "no.such.event" in page.locator("#def-welcome").input_value()  # what was typed, kept
    page.goto(f"{system.console}/sequences")
    assert page.locator("#def-welcome").input_value() == original
    # The let-go review, run from its page.
    page.goto(f"{system.console}/review")
    page.get_by_role("button", name="Run a review now").click()
    page.wait_for_url(re.compile(r"done=review"))
    assert "Review of" in page.inner_text("main")
    # The person asks for their data: the admin exports it, watches every service send its part,
    # and downloads the document through the console.
    page.goto(f"{system.console}/leads/{lead_id}")
    page.locator(f"form[action='/leads/{lead_id}/export'] button").click()
    page.wait_for_url(re.compile(r"/exports/[0-9a-f-]+$"))
    export_url = page.url
    until_shown(page, export_url, "h2", text="4/4")
    document = page.request.get(f"{export_url}/download")
    assert document.ok and lead_id in document.text() and '"nurture"' in document.text()
    mail = page.request.get(f"{export_url}/mail.zip")
    assert mail.ok and mail.body()[:2] == b"PK"
    # The pipeline's filters update the board in place (htmx) and the address says what is shown.
    page.goto(f"{system.console}/pipeline")
    page.select_option("#f-channel", "referral")
    page.wait_for_url(re.compile(r"channel=referral"))
    assert page.locator("#board .leads a", has_text="Ada Lovelace").count() >= 1
    page.close()

    # Usable at 360 px and by keyboard: no sideways scrolling; Tab reaches the skip link first.
    page = sign_in(browser, system.console, API_KEY, width=360)
    for path in (f"/leads/{lead_id}", "/pipeline", "/clients", "/invoices", "/economics"):
        page.goto(f"{system.console}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 362, f"{path} is {width} px wide at 360"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.close()

    # Every page, in English and in Persian (right to left), for the README.
    SHOTS.mkdir(parents=True, exist_ok=True)
    pages = {
        "pipeline": "/pipeline",
        "lead": f"/leads/{lead_id}",
        "clients": "/clients",
        "client": f"/clients/{lead_id}",
        "invoices": "/invoices",
        "review": "/review",
        "economics": "/economics",
        "tasks": "/tasks",
        "sequences": "/sequences",
        "export": export_url.removeprefix(system.console),
    }
    for lang in ("en", "fa"):
        page = sign_in(browser, system.console, API_KEY, lang=lang)
        assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "fa" else "ltr")
        for name, path in pages.items():
            response = page.goto(f"{system.console}{path}")
            assert response is not None and response.status == 200, f"{path} ({lang}): {response and response.status}"
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SHOTS / f"{name}-{lang}.png"))
        page.close()
    for lang, locale in (("en", "en-GB"), ("fa", "fa-IR")):  # signed out: the browser's language
        login = browser.new_page(viewport={"width": 1280, "height": 900}, locale=locale)
        login.goto(f"{system.console}/login")
        assert login.locator("html").get_attribute("lang") == lang
        login.screenshot(path=str(SHOTS / f"login-{lang}.png"))
        login.close()

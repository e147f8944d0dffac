# ruff: noqa: RUF001  (Bengali and Persian letters are meant, not look-alikes)
"""English, Bengali and Persian (right to left): chosen per person, money and dates their way."""

from __future__ import annotations

import pytest

from console.texts import pick_language, translator
from tests.console.fakes import LEAD_ID, Services, console, csrf_of, signed_in


@pytest.mark.parametrize(
    ("preferred", "header", "expected"),
    [
        (["fa", "en"], "en", "fa"),
        (["de", "bn"], "", "bn"),
        ([], "de-DE,bn;q=0.8,fa;q=0.9", "fa"),
        ([], "fa;q=0,en;q=0.5", "en"),
        ([], "", "en"),
        (["xx"], "zz", "en"),
    ],
)
def test_the_language_comes_from_the_person_else_the_browser(preferred: list[str], header: str, expected: str) -> None:
    assert pick_language(preferred, header) == expected


def test_the_persons_language_from_the_api_and_persian_reads_right_to_left() -> None:
    services = Services()
    client, _ = signed_in(services, "finance", languages=("fa", "en"))
    page = client.get(f"/leads/{LEAD_ID}")
    assert '<html lang="fa" dir="rtl">' in page.text
    assert "صورت‌حساب‌ها" in page.text  # "Invoices"
    assert "۹۰۰" in page.text  # the deposit's amount in Persian digits
    client.__exit__(None, None, None)


def test_the_switch_keeps_the_choice_for_the_session() -> None:
    services = Services()
    client, csrf = signed_in(services, "sales")
    assert '<html lang="en" dir="ltr">' in client.get("/pipeline").text
    answer = client.post("/language", data={"csrf": csrf, "lang": "bn", "next": "/pipeline"})
    assert answer.status_code == 303 and answer.headers["location"] == "/pipeline"
    page = client.get("/pipeline").text
    assert '<html lang="bn" dir="ltr">' in page and "পাইপলাইন" in page
    client.post("/language", data={"csrf": csrf, "lang": "xx", "next": "/pipeline"})
    assert '<html lang="bn"' in client.get("/pipeline").text  # an unknown language changes nothing
    client.__exit__(None, None, None)


def test_before_sign_in_the_browser_language_is_used() -> None:
    with console(Services()) as client:
        page = client.get("/login", headers={"Accept-Language": "bn-BD,en;q=0.5"})
        assert '<html lang="bn"' in page.text and "সাইন ইন" in page.text
        csrf_of(page.text)


def test_every_word_of_the_menu_is_translated() -> None:
    from console.texts import NAV

    for lang in ("bn", "fa"):
        _ = translator(lang)
        assert all(_(label) != label for _href, label, _p in NAV), lang


def test_what_an_action_says_afterwards_is_translated_too() -> None:
    from console.texts import DONE

    for lang in ("bn", "fa"):
        _ = translator(lang)
        assert all(_(text) != text for text in DONE.values()), lang

# ruff: noqa: RUF001  (Bengali and Persian digits and letters are meant, not look-alikes)
"""Every nurture e-mail exists in English, Bengali and Persian, and renders in each with the
variables its sequence gives it (StrictUndefined: a missing variable fails)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from services.nurture.content import PARTS, Renderer, load_catalog
from shared import i18n

NURTURE = Path(__file__).resolve().parents[2] / "services" / "nurture"
TEMPLATES = NURTURE / "templates"
LANGUAGES = ("en", "bn", "fa")
_NAME = re.compile(r"^(?P<base>[a-z0-9_]+)\.(?P<lang>[a-z]{2,3})\.(?P<part>subject|txt|html)\.j2$")


def translations(directory: Path) -> dict[str, set[tuple[str, str]]]:
    """Each template's (language, part) files; partials (``_layout``...) are not templates."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in directory.iterdir():
        if path.name.startswith("_") or not path.name.endswith(".j2"):
            continue
        m = _NAME.match(path.name)
        assert m, f"{path.name}: not <template>.<lang>.<subject|txt|html>.j2"
        found[m["base"]].add((m["lang"], m["part"]))
    return found


def missing_translations(directory: Path) -> list[str]:
    """The files a template lacks to exist in every language."""
    want = {(lang, part) for lang in LANGUAGES for part in PARTS}
    return sorted(
        f"{base}.{lang}.{part}.j2" for base, have in translations(directory).items() for lang, part in want - have
    )


def test_every_template_exists_in_every_language() -> None:
    assert missing_translations(TEMPLATES) == []
    assert len(translations(TEMPLATES)) >= 20


def test_the_check_fails_on_a_template_in_one_language_only(tmp_path: Path) -> None:
    for part in PARTS:
        (tmp_path / f"hello.en.{part}.j2").write_text("Hello")
        (tmp_path / f"hello.bn.{part}.j2").write_text("নমস্কার")
    (tmp_path / "hello.fa.subject.j2").write_text("سلام")
    assert missing_translations(tmp_path) == ["hello.fa.html.j2", "hello.fa.txt.j2"]


def test_every_sequence_template_exists_in_every_language() -> None:
    catalog = load_catalog(NURTURE / "sequences")
    renderer = Renderer(TEMPLATES)
    templates = catalog.templates()
    assert {"invoice_issued", "payment_retry_reminder", "price_change_notice", "survey", "winback_offer"} <= templates
    for lang in LANGUAGES:
        assert Renderer(TEMPLATES, fallback=lang).missing(templates) == [], lang
    renderer.check(templates)


# --------------------------------------------------------------------------- rendering

BASE: dict[str, Any] = {
    "name": "Rahim Uddin",
    "first_name": "Rahim",
    "brand": "Clientflow",
    "unsubscribe_url": "https://nurture.example/unsubscribe?token=abc.def&m=1",
    "payment_update_url": "https://billing.example/card",
    "booking_url": "https://book.example/kickoff",
    "click": lambda url: f"https://nurture.example/t/c/tok?u={url}",
    "survey_url": lambda n: f"https://nurture.example/survey/tok?score={n}",
    "survey": "onboarding",
}

# What the triggers' payloads carry (invoice.issued, payment.failed, price.change_scheduled,
# deal.won, cancellation.completed, client.terminated), as JSON gives them to a template.
DATA: dict[str, Any] = {
    "invoice_id": "6f1d2c1e-8d1a-4a53-9c43-0b7b8f5e9a11",
    "number": "2026-000042",
    "kind": "deposit",
    "amount": "1250.00",
    "currency": "EUR",
    "issued_at": "2026-03-01T09:00:00+00:00",
    "due_at": "2026-03-15T00:00:00+00:00",
    "decline_code": "expired_card",
    "attempt": 1,
    "old_price": "49.00",
    "new_price": "59.00",
    "percent": None,
    "effective_at": "2026-04-01T00:00:00+00:00",
    "notice_days": 30,
    "title": "Website redesign",
    "reason": "budget",
}

VARIANTS: list[tuple[dict[str, Any], Any]] = [
    (DATA, 7),
    (DATA | {"kind": "final", "decline_code": None, "old_price": None, "new_price": None, "percent": "12.5"}, 0),
    ({}, None),  # a trigger without those fields: optional parts stay empty, nothing raises
]

ALL = sorted(translations(TEMPLATES))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


@pytest.mark.parametrize("template", ALL)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_template_renders_in_every_language(renderer: Renderer, template: str, lang: str) -> None:
    for data, days_before in VARIANTS:
        if not data and template.startswith("offboarding_"):
            continue  # offboarding always has its client.terminated payload (not ours to change)
        rendered = renderer.render(template, lang, BASE | {"data": data, "days_before": days_before})
        assert rendered.language == lang
        assert rendered.subject and "\n" not in rendered.subject
        assert "Rahim" in rendered.text and BASE["unsubscribe_url"] in rendered.text
        assert f'lang="{lang}"' in rendered.html
        assert ('dir="rtl"' in rendered.html) == (lang == "fa")
        for text in (rendered.subject, rendered.text):
            assert "{{" not in text and "{%" not in text


@pytest.mark.parametrize("lang", ["bn", "fa"])
def test_bengali_and_persian_emails_are_written_in_their_script(renderer: Renderer, lang: str) -> None:
    script = re.compile(r"[\u0980-\u09FF]" if lang == "bn" else r"[\u0600-\u06FF]")
    for template in ALL:
        rendered = renderer.render(template, lang, BASE | {"data": DATA, "days_before": 7})
        assert script.search(rendered.subject), template
        # Mostly the language's own letters, not English left behind.
        words = re.sub(r"https?://\S+", "", rendered.text)
        letters = [c for c in words if c.isalpha()]
        latin = sum(c.isascii() for c in letters)
        assert latin / len(letters) < 0.25, (template, rendered.text)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_money_and_dates_are_written_the_persons_way(renderer: Renderer, lang: str) -> None:
    ctx = BASE | {"data": DATA, "days_before": 7}
    money = i18n.format_money("1250.00", "EUR", lang)
    due = i18n.format_date("2026-03-15", lang)
    for template in ("invoice_issued", "payment_retry_reminder"):
        rendered = renderer.render(template, lang, ctx)
        assert money in rendered.text and money in rendered.html, template
    invoice = renderer.render("invoice_issued", lang, ctx)
    assert due in invoice.text
    price = renderer.render("price_change_notice", lang, ctx)
    assert i18n.format_money("59.00", "EUR", lang) in price.text
    assert i18n.format_date("2026-04-01", lang) in price.text
    assert {"en": "7 days", "bn": "৭ দিন", "fa": "۷ روز"}[lang] in price.subject
    survey = renderer.render("survey", lang, ctx)
    assert {"en": ">10</a>", "bn": ">১০</a>", "fa": ">۱۰</a>"}[lang] in survey.html
    assert "score=10" in survey.html  # the links stay machine-readable


def test_hand_checked_lines() -> None:
    renderer = Renderer(TEMPLATES)
    ctx = BASE | {"data": DATA, "days_before": 7}
    assert renderer.render("invoice_issued", "en", ctx).subject == "Invoice 2026-000042 from Clientflow"
    assert "€1,250.00" in renderer.render("invoice_issued", "en", ctx).text
    assert "March 15, 2026" in renderer.render("invoice_issued", "en", ctx).text
    bn = renderer.render("invoice_issued", "bn", ctx).text
    assert "মোট ১,২৫০.০০€, পরিশোধের শেষ তারিখ ১৫ মার্চ, ২০২৬।" in bn
    fa = renderer.render("invoice_issued", "fa", ctx).text
    assert "به مبلغ \u200e€\xa0۱٬۲۵۰٫۰۰ آماده است و سررسید پرداخت آن ۱۵ مارس ۲۰۲۶ است." in fa
    assert renderer.render("invoice_reminder", "bn", ctx).subject == "ইনভয়েস 2026-000042 পরিশোধের আর ৭ দিন বাকি"
    assert renderer.render("invoice_reminder", "fa", ctx | {"days_before": 0}).subject == (
        "امروز سررسید صورتحساب 2026-000042 است"
    )


@pytest.mark.parametrize(
    ("lang", "fonts"),
    [("bn", ["Noto Sans Bengali", "Vrinda"]), ("fa", ["Vazirmatn", "Tahoma"])],
)
def test_html_names_fonts_that_have_the_script(renderer: Renderer, lang: str, fonts: list[str]) -> None:
    for template in ALL:
        html = renderer.render(template, lang, BASE | {"data": DATA, "days_before": 7}).html
        body = html[html.index("<body") :].split(">", 1)[0]
        assert all(font in body for font in fonts), (template, body)

# ruff: noqa: RUF001  (Bengali and Persian digits and letters are meant, not look-alikes)
"""Dates, numbers and money in the person's language (shared/i18n.py), against strings written
by hand: Bengali digits and lakh grouping for ``bn``, Persian digits and separators for ``fa``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from jinja2 import Environment, StrictUndefined

from shared import i18n

LRM, NBSP = "\u200e", "\xa0"


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "€1,250.00"),
        ("bn", "১,২৫০.০০€"),
        ("fa", f"{LRM}€{NBSP}۱٬۲۵۰٫۰۰"),
        ("fa-IR", f"{LRM}€{NBSP}۱٬۲۵۰٫۰۰"),
        ("bn_BD", "১,২৫০.০০€"),
        ("sw", "€1,250.00"),  # a language we do not write: English
        (None, "€1,250.00"),
    ],
)
def test_money(lang: str | None, expected: str) -> None:
    assert i18n.format_money(Decimal("1250"), "EUR", lang) == expected


def test_money_in_each_currency_and_grouping() -> None:
    assert i18n.format_money("1234567.5", "BDT", "bn") == "১২,৩৪,৫৬৭.৫০৳"  # lakh and crore grouping
    assert i18n.format_money("1234567.5", "BDT", "en") == "BDT1,234,567.50"
    assert i18n.format_money("99.9", "USD", "bn") == "৯৯.৯০US$"
    assert i18n.format_money("99.9", "USD", "fa") == f"{LRM}${NBSP}۹۹٫۹۰"
    assert i18n.format_money(1500000, "IRR", "fa") == f"{LRM}ریال{NBSP}۱٬۵۰۰٬۰۰۰"  # the rial has no decimals
    assert i18n.format_money("49", "eur", "en") == "€49.00"
    assert i18n.format_money("49", None, "bn") == "৪৯.০০"  # no currency: the number


@pytest.mark.parametrize(
    ("value", "lang", "expected"),
    [
        (1234567, "en", "1,234,567"),
        (1234567, "bn", "১২,৩৪,৫৬৭"),
        (1234567, "fa", "۱٬۲۳۴٬۵۶۷"),
        ("12.5", "en", "12.5"),
        ("12.5", "bn", "১২.৫"),
        ("12.5", "fa", "۱۲٫۵"),
        (0, "fa", "۰"),
        (-3, "bn", "-৩"),
    ],
)
def test_number(value: object, lang: str, expected: str) -> None:
    assert i18n.format_number(value, lang) == expected  # type: ignore[arg-type]


def test_number_with_fixed_decimals() -> None:
    assert i18n.format_number("1234567.891", "bn", decimals=2) == "১২,৩৪,৫৬৭.৮৯"
    assert i18n.format_number("7", "fa", decimals=1) == "۷٫۰"
    assert i18n.format_number(2.5, "en", decimals=0) == "2"  # round half to even, as Decimal does


@pytest.mark.parametrize(
    ("value", "lang", "style", "expected"),
    [
        (date(2026, 3, 5), "en", "long", "March 5, 2026"),
        (date(2026, 3, 5), "bn", "long", "৫ মার্চ, ২০২৬"),
        (date(2026, 3, 5), "fa", "long", "۵ مارس ۲۰۲۶"),
        ("2026-12-25T23:00:00+00:00", "en", "full", "Friday, December 25, 2026"),
        ("2026-12-25T23:00:00+00:00", "bn", "full", "শুক্রবার, ২৫ ডিসেম্বর, ২০২৬"),
        ("2026-12-25T23:00:00+00:00", "fa", "full", "جمعه ۲۵ دسامبر ۲۰۲۶"),
        (datetime(2026, 4, 1, 9, 30, tzinfo=UTC), "bn", "short", "১/৪/২৬"),
        (datetime(2026, 4, 1, 9, 30, tzinfo=UTC), "fa", "short", "۲۰۲۶/۴/۱"),
        ("۲۰۲۶-۰۴-۰۱", "en", "medium", "Apr 1, 2026"),  # typed with Persian digits
    ],
)
def test_date(value: object, lang: str, style: str, expected: str) -> None:
    assert i18n.format_date(value, lang, style=style) == expected  # type: ignore[arg-type]


def test_digits_both_ways() -> None:
    assert i18n.native_digits("Invoice 2026-07", "bn") == "Invoice ২০২৬-০৭"
    assert i18n.native_digits("7 روز", "fa") == "۷ روز"
    assert i18n.native_digits("7 days", "en") == "7 days"
    assert i18n.to_ascii_digits("০১২৩৪৫৬৭৮৯ ۰۱۲۳۴۵۶۷۸۹ ٠١٢٣٤٥٦٧٨٩") == "0123456789 0123456789 0123456789"


def test_bad_values_name_themselves() -> None:
    with pytest.raises(ValueError, match="not a number: 'lots'"):
        i18n.format_money("lots", "EUR", "en")
    with pytest.raises(ValueError, match="not a date: 'soon'"):
        i18n.format_date("soon", "fa")


def test_jinja_filters_write_in_the_templates_language() -> None:
    env = Environment(undefined=StrictUndefined)
    env.filters.update(i18n.jinja_filters())
    template = env.from_string(
        "{{ amount | money(currency) }} | {{ due | date }} | {{ n | number }} | {{ days | digits }} | [{{ none | money('EUR') }}]"
    )
    values = {"amount": "1250.00", "currency": "EUR", "due": "2026-03-15T00:00:00Z", "n": 1500, "days": 7, "none": None}
    assert template.render(values, language="en") == "€1,250.00 | March 15, 2026 | 1,500 | 7 | []"
    assert template.render(values, language="bn") == "১,২৫০.০০€ | ১৫ মার্চ, ২০২৬ | ১,৫০০ | ৭ | []"
    assert template.render(values, language="fa") == f"{LRM}€{NBSP}۱٬۲۵۰٫۰۰ | ۱۵ مارس ۲۰۲۶ | ۱٬۵۰۰ | ۷ | []"


def test_filters_read_lang_on_leads_pages() -> None:
    """Leads' estimate pages name the language ``lang`` (services/leads/estimates_api.py)."""
    env = Environment(undefined=StrictUndefined)
    env.filters.update(i18n.jinja_filters())
    template = env.from_string("{{ total | money('BDT') }} / {{ until | date }}")
    values = {"total": "250000", "until": datetime(2026, 5, 31, 18, tzinfo=UTC)}
    assert template.render(values, lang="bn") == "২,৫০,০০০.০০৳ / ৩১ মে, ২০২৬"
    assert (
        template.render(values, lang="fa") == f"{LRM}BDT{NBSP}۲۵۰٬۰۰۰٫۰۰ / ۳۱ مهٔ ۲۰۲۶"
    )  # CLDR writes May with its ezafe
    assert template.render(values) == "BDT250,000.00 / May 31, 2026"  # no language: English

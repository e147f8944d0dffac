# ruff: noqa: RUF002  (Bengali and Persian digits and letters are meant, not look-alikes)
"""Dates, numbers and money written the way the person's language writes them.

Babel (CLDR data) gives each language its patterns: where the currency symbol goes, the
grouping (Bengali groups lakhs and crores: ``12,34,567``), the separators (Persian writes
``٬`` and ``٫``) and the month names. Babel writes the digits themselves in ASCII whatever the
numbering system, so the digits of the language's native numbering system (``beng`` for
Bengali, ``arabext`` for Persian, as CLDR names them) are put in afterwards::

    format_money("1234.5", "BDT", "bn")  -> "১,২৩৪.৫০৳"
    format_money("1234.5", "USD", "fa")  -> "‎$ ۱٬۲۳۴٫۵۰"
    format_date("2026-03-05", "bn")      -> "৫ মার্চ, ২০২৬"

A language is read from its primary subtag (``fa-IR`` is ``fa``); one this module does not know
is written the English way. Dates are Gregorian in every language (invoices and contracts are).
``to_ascii_digits`` does the reverse, for reading numbers people typed in Bengali or Persian.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from babel import Locale
from babel import dates as babel_dates
from babel import numbers as babel_numbers

# The locale each supported language is written in.
LOCALES = {"en": "en", "bn": "bn_BD", "fa": "fa_IR"}
FALLBACK = "en"

# Digits of the numbering systems CLDR names (Babel knows the names, not the digits).
DIGITS = {
    "latn": "0123456789",
    "beng": "০১২৩৪৫৬৭৮৯",
    "arabext": "۰۱۲۳۴۵۶۷۸۹",
    "arab": "٠١٢٣٤٥٦٧٨٩",
}
_TO_ASCII = str.maketrans({d: str(i) for system in DIGITS.values() for i, d in enumerate(system)})

Number = Decimal | int | float | str


def language_of(lang: str | None) -> str:
    """The supported language ``lang`` names (``fa-IR`` and ``fa_IR`` are ``fa``), else English."""
    primary = (lang or "").strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LOCALES else FALLBACK


@cache
def _locale(lang: str) -> tuple[Locale, str]:
    """The Babel locale of a supported language and its native numbering system."""
    locale = Locale.parse(LOCALES[lang])
    system = locale.other_numbering_systems.get("native", locale.default_numbering_system)
    return locale, system if system in DIGITS else "latn"


def native_digits(text: str, lang: str | None) -> str:
    """``text`` with its ASCII digits written in the language's own digits."""
    _, system = _locale(language_of(lang))
    return text if system == "latn" else text.translate(str.maketrans("0123456789", DIGITS[system]))


def to_ascii_digits(text: str) -> str:
    """Bengali, Persian and Arabic-Indic digits as ASCII digits (other characters unchanged)."""
    return text.translate(_TO_ASCII)


def _decimal(value: Number) -> Decimal:
    if isinstance(value, float):
        return Decimal(str(value))
    try:
        return Decimal(to_ascii_digits(str(value)).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def format_number(value: Number, lang: str | None, *, decimals: int | None = None) -> str:
    """A number with the language's grouping, separators and digits; ``decimals`` fixes the
    number of decimals (by default as many as the value has)."""
    lang = language_of(lang)
    locale, system = _locale(lang)
    number = _decimal(value)
    fmt = None
    if decimals is not None:
        number = round(number, decimals)
        fmt = "#,##0" + ("." + "0" * decimals if decimals else "")
        if lang == "bn":
            fmt = "#,##,##0" + ("." + "0" * decimals if decimals else "")
    text = babel_numbers.format_decimal(number, format=fmt, locale=locale, numbering_system=system)
    return native_digits(text, lang)


def format_money(amount: Number, currency: str | None, lang: str | None) -> str:
    """An amount in ``currency`` (ISO 4217) as the language writes money: its symbol where the
    language puts it, the currency's usual decimals, the language's digits. Without a currency,
    the number with two decimals."""
    lang = language_of(lang)
    if not currency:
        return format_number(amount, lang, decimals=2)
    locale, system = _locale(lang)
    text = babel_numbers.format_currency(
        _decimal(amount), currency.strip().upper(), locale=locale, numbering_system=system
    )
    return native_digits(text, lang)


def _date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = to_ascii_digits(str(value)).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ValueError(f"not a date: {value!r}") from None


def format_date(value: date | datetime | str, lang: str | None, *, style: str = "long") -> str:
    """A date (or a datetime's date, or an ISO string) as the language writes it: ``style`` is
    Babel's ``short``, ``medium``, ``long`` or ``full``. A datetime's own date is used, as given."""
    lang = language_of(lang)
    locale, _ = _locale(lang)
    return native_digits(babel_dates.format_date(_date(value), format=style, locale=locale), lang)


# --------------------------------------------------------------------------- Jinja filters


def jinja_filters() -> dict[str, Callable[..., Any]]:
    """``money``, ``date``, ``number`` and ``digits`` filters that write in the template's
    ``language`` (the variable every nurture template sees; ``lang`` on leads' pages). Nothing to format (``None`` or an empty
    string) stays empty, so an optional field reads as nothing, not as an error::

        {{ data.get('amount') | money(data.get('currency')) }}
        {{ data.get('due_at') | date }}   {{ days_before | digits }}
    """
    from jinja2 import pass_context
    from jinja2.runtime import Context

    def lang(ctx: Context) -> str | None:
        value = ctx.get("language") or ctx.get("lang")  # nurture's e-mails say language, leads' pages lang
        return value if isinstance(value, str) else None

    @pass_context
    def money(ctx: Context, amount: Any, currency: str | None = None) -> str:
        return "" if amount in (None, "") else format_money(amount, currency, lang(ctx))

    @pass_context
    def date_filter(ctx: Context, value: Any, style: str = "long") -> str:
        return "" if value in (None, "") else format_date(value, lang(ctx), style=style)

    @pass_context
    def number(ctx: Context, value: Any, decimals: int | None = None) -> str:
        return "" if value in (None, "") else format_number(value, lang(ctx), decimals=decimals)

    @pass_context
    def digits(ctx: Context, value: Any) -> str:
        return "" if value is None else native_digits(str(value), lang(ctx))

    return {"money": money, "date": date_filter, "number": number, "digits": digits}

"""Sequences and email templates, read from the service's folders (and the database).

A sequence is one YAML file in ``sequences/`` (one mapping per file), or the JSON body of
``PUT /sequences/{name}`` (same fields)::

    name: payment_failed            # unique; lower case, digits and _
    description: Friendly note after a failed card payment.
    trigger: payment.failed         # event type nurture reacts to (leads, deals, payments,
                                    # cancellations, retention topics) that enrolls a person
    when:                           # optional segment conditions on the person, all must hold:
      language: [en, bn]            #   stage, tier, industry, language, channel, segment
    segments: [ideal, default]      # optional shorthand for when: {segment: [...]}
    match:                          # optional conditions on the trigger's payload, all must hold:
      to_state: [warning, blocked]  #   a field of the trigger's payload -> the values that enroll
    category: transactional         # default of the steps: marketing (needs consent) or transactional
    anchor: effective_at            # optional: a time field of the trigger, for 'before' steps
    reentry: {per: invoice_id}      # never (default) | always | {per: <trigger field(s)>} | {after: 90d}
    steps:                          # step numbers are the positions, from 0
      - template: payment_failed    # templates/payment_failed.<lang>.{subject,txt,html}.j2
        delay: 0                    # after the previous step (step 0: after enrollment); seconds
      - template: payment_retry     #   or a number with a unit s, m, h, d, w: "3d"
        delay: 3d
        if: not_opened_previous     # optional: not_opened_previous, opened_previous,
                                    #   not_clicked_previous, clicked_previous
      - template: price_change_notice
        before: 7d                  # due 7 days before the anchor instead of after a delay
    exit_on: [paid, reply, takeover]  # reply, unsubscribe, bounce, deal_won, deal_lost, takeover,
                                    # erasure, paid, or any event type of the contract
    then: nurture                   # optional: enroll in this sequence once every step is done

A person leaves every marketing sequence when they unsubscribe, and every sequence when they
are erased, whatever ``exit_on`` says. With ``reentry: {per: invoice_id}`` an exit event that
carries an ``invoice_id`` ends only the enrollment of that invoice.

A template is three files per language: ``<template>.<lang>.subject.j2`` (one line),
``.txt.j2`` (plain text) and ``.html.j2`` (autoescaped). The person's language is used when all
three exist, else the fallback language (``en``). Templates see ``name``, ``first_name``,
``brand``, ``language``, ``unsubscribe_url``, ``data`` (the trigger's payload), ``days_before``
(for 'before' steps), ``click(url)`` (a tracked link), ``survey_url(score)`` (a one-click
survey answer), ``payment_update_url`` and ``booking_url``; the filters ``money(currency)``,
``date``, ``number`` and ``digits`` write them the way the template's language does
(shared/i18n.py: Bengali and Persian digits, the language's separators and month names).
Every template exists in every language (tests/unit/test_templates_languages.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound, select_autoescape

from services.nurture import domain
from shared import i18n, safe_yaml, topics
from shared.events import EVENT_TYPES, types_on

# The topics nurture reads; their event types are the triggers a sequence may use.
CONSUMED_TOPICS = (topics.LEADS, topics.DEALS, topics.PAYMENTS, topics.CANCELLATIONS, topics.RETENTION)


def triggers() -> set[str]:
    """Every event type on the topics nurture reads: what may start (or end) a sequence."""
    return {t for topic in CONSUMED_TOPICS for t in types_on(topic)}


def payload_fields() -> dict[str, set[str]]:
    """Each event type's payload fields, to check a sequence's anchor and re-entry field."""
    return {name: set(et.model.model_fields) for name, et in EVENT_TYPES.items()}


def parse_sequence(data: Any) -> domain.Sequence:
    """Validate a definition against the contract and the events nurture reacts to."""
    return domain.sequence_from_dict(
        data, known_events=EVENT_TYPES, triggers=triggers(), payload_fields=payload_fields()
    )


def load_sequence(path: Path) -> domain.Sequence:
    """One sequence file, checked; the error names the file."""
    try:
        data = safe_yaml.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise domain.SequenceError(f"{path.name}: not valid YAML: {exc}") from None
    try:
        return parse_sequence(data)
    except domain.SequenceError as exc:
        raise domain.SequenceError(f"{path.name}: {exc}") from None


def load_catalog(directory: Path) -> domain.Catalog:
    """Every ``*.yaml`` sequence in ``directory``; a bad file stops the service from starting."""
    return domain.Catalog.of(load_sequence(path) for path in sorted(directory.glob("*.yaml")))


@dataclass(frozen=True)
class Rendered:
    language: str
    subject: str
    text: str
    html: str


PARTS = ("subject", "txt", "html")
TEMPLATE_LIST_TTL_S = 5.0


class Renderer:
    """Renders a template in the person's language, falling back to the default language."""

    def __init__(self, directory: Path, *, fallback: str = "en") -> None:
        self.fallback = fallback
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=StrictUndefined,  # a typo in a template fails loudly, not as an empty hole
            keep_trailing_newline=True,
        )
        # money, date, number and digits: written in the template's language (shared/i18n.py).
        self.env.filters.update(i18n.jinja_filters())
        self._listed: tuple[float, frozenset[str]] | None = None
        # A template's three compiled parts, kept until the listing is read again: Jinja's own
        # cache checks each file's modification time on every lookup, three stat calls an email.
        self._compiled: dict[str, tuple[Template, Template, Template]] = {}

    def _names(self) -> frozenset[str]:
        # Listing walks the directory: once per render of every e-mail it was a visible share of
        # sending. A template added (or changed) in the directory is still seen within a few
        # seconds.
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > TEMPLATE_LIST_TTL_S:
            self._listed = (now, frozenset(self.env.list_templates()))
            self._compiled = {}
        return self._listed[1]

    def _parts(self, base: str) -> tuple[Template, Template, Template]:
        parts = self._compiled.get(base)
        if parts is None:
            subject, text, html = (self.env.get_template(f"{base}.{part}.j2") for part in PARTS)
            parts = self._compiled[base] = (subject, text, html)
        return parts

    def _exists(self, base: str, names: frozenset[str] | None = None) -> bool:
        names = self._names() if names is None else names
        return all(f"{base}.{part}.j2" in names for part in PARTS)

    def missing(self, templates: set[str]) -> list[str]:
        """Templates that do not exist in the fallback language (read afresh: a sequence may name
        a template just added)."""
        names = frozenset(self.env.list_templates())
        return sorted(t for t in templates if not self._exists(f"{t}.{self.fallback}", names))

    def check(self, templates: set[str]) -> None:
        """Every template a sequence names exists in the fallback language (checked at start)."""
        missing = self.missing(templates)
        if missing:
            raise TemplateNotFound(f"templates missing in {self.fallback!r}: {', '.join(missing)}")

    def render(self, template: str, language: str | None, context: dict[str, Any]) -> Rendered:
        for base in domain.template_candidates(template, language, fallback=self.fallback):
            if self._exists(base):
                lang = base.rsplit(".", 1)[1]
                values = {**context, "language": lang}
                subject, text, html = (part.render(values) for part in self._parts(base))
                # A header is one line: a template's stray newlines must not break it.
                return Rendered(lang, " ".join(subject.split()), text, html)
        raise TemplateNotFound(f"{template} has no {self.fallback!r} version")


# --------------------------------------------------------------------------- public pages

# What the public pages (unsubscribe, the survey, its thank-you) say, in each language a
# template exists in; ``{brand}`` and ``{score}`` are filled in (escaped) by the page.
PAGE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_question": "Stop {brand}'s marketing emails? Invoices and messages about your account still arrive.",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed": "You will get no more marketing emails from us.",
        "survey_title": "How likely are you to recommend us?",
        "survey_question": "How likely are you to recommend us to a friend or colleague?",
        "survey_before": "You answered {score}/10 before; sending again replaces that answer.",
        "survey_scale": "0 = not at all, 10 = extremely",
        "survey_comment": "Anything we should know?",
        "survey_send": "Send",
        "thanks_title": "Thank you",
        "thanks_score": "Thank you! We have {score}/10.",
        "thanks_comment": "Thank you! We have your comment.",
    },
    "bn": {
        "unsubscribe_title": "আনসাবস্ক্রাইব",
        "unsubscribe_question": "{brand}-এর মার্কেটিং ইমেইল বন্ধ করবেন? ইনভয়েস ও আপনার অ্যাকাউন্ট সংক্রান্ত বার্তা আগের মতোই আসবে।",
        "unsubscribe_button": "আনসাবস্ক্রাইব করুন",
        "unsubscribed_title": "আনসাবস্ক্রাইব করা হয়েছে",
        "unsubscribed": "আমাদের কাছ থেকে আপনি আর কোনো মার্কেটিং ইমেইল পাবেন না।",
        "survey_title": "আমাদের কথা অন্যকে সুপারিশ করার সম্ভাবনা কতটুকু?",
        "survey_question": "কোনো বন্ধু বা সহকর্মীকে আমাদের কথা সুপারিশ করার সম্ভাবনা আপনার কতটুকু?",
        "survey_before": "আপনি আগে {score}/১০ দিয়েছিলেন; আবার পাঠালে আগের উত্তরটি বদলে যাবে।",
        "survey_scale": "০ = একেবারেই না, ১০ = অবশ্যই",  # noqa: RUF001
        "survey_comment": "আমাদের আর কিছু জানানোর আছে?",
        "survey_send": "পাঠান",
        "thanks_title": "ধন্যবাদ",
        "thanks_score": "ধন্যবাদ! আপনার দেওয়া {score}/১০ আমরা পেয়েছি।",
        "thanks_comment": "ধন্যবাদ! আপনার মন্তব্য আমরা পেয়েছি।",
    },
    "fa": {
        "unsubscribe_title": "لغو اشتراک",
        "unsubscribe_question": "ایمیل‌های تبلیغاتی {brand} قطع شود؟ صورتحساب‌ها و پیام‌های مربوط به حساب شما همچنان می‌رسند.",  # noqa: RUF001
        "unsubscribe_button": "لغو اشتراک",
        "unsubscribed_title": "اشتراک لغو شد",
        "unsubscribed": "دیگر ایمیل تبلیغاتی از ما دریافت نمی‌کنید.",
        "survey_title": "چقدر احتمال دارد ما را پیشنهاد کنید؟",
        "survey_question": "چقدر احتمال دارد ما را به یک دوست یا همکار پیشنهاد کنید؟",
        "survey_before": "پیش‌تر {score} از ۱۰ پاسخ داده بودید؛ ارسال دوباره جای آن پاسخ را می‌گیرد.",  # noqa: RUF001
        "survey_scale": "۰ = اصلاً، ۱۰ = حتماً",  # noqa: RUF001
        "survey_comment": "چیز دیگری هست که باید بدانیم؟",
        "survey_send": "ارسال",
        "thanks_title": "سپاسگزاریم",
        "thanks_score": "سپاسگزاریم! نمرهٔ {score} از ۱۰ شما به دست ما رسید.",  # noqa: RUF001
        "thanks_comment": "سپاسگزاریم! نظر شما به دست ما رسید.",
    },
}
RTL_LANGUAGES = frozenset({"fa", "ar", "he", "ur"})
# The fonts a page names first for its script (the e-mails' _layout.html.j2 names the same).
PAGE_FONTS = {
    "bn": "'Noto Sans Bengali','Hind Siliguri',Vrinda,'Shonar Bangla',",
    "fa": "Vazirmatn,'Noto Naskh Arabic',Tahoma,'Segoe UI',",
}


def page_language(language: str | None) -> str:
    """The language a public page answers in: the person's, if the pages speak it, else English."""
    lang = i18n.language_of(language)
    return lang if lang in PAGE_TEXTS else "en"


def page_text(language: str, key: str, **values: str) -> str:
    """One sentence of a public page in ``language`` (values are given escaped, numbers in
    the language's digits)."""
    text = PAGE_TEXTS[page_language(language)][key]
    return text.format(**values) if values else text

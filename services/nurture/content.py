"""Sequences and email templates, read from the service's folders.

A sequence is one YAML file in ``sequences/`` (one mapping per file)::

    name: welcome                 # unique; lower case, digits and _
    description: First touches after capture.
    trigger: lead.captured        # event type (from the contract) that enrolls a person
    category: marketing           # default for the steps: marketing (needs consent) or transactional
    segments: [ideal, default]    # optional: only people of these segments; omit for everyone
    steps:                        # step numbers are the positions, from 0
      - template: welcome         # templates/welcome.<lang>.{subject,txt,html}.j2
        delay: 0                  # after the previous step (step 0: after enrollment);
      - template: welcome_followup  # seconds, or a number with a unit s, m, h, d, w: "3d"
        delay: 3d
        category: marketing       # optional per-step override
    exit_on: [deal.won]           # event types that end the enrollment and cancel what is left

A template is three files per language: ``<template>.<lang>.subject.j2`` (one line),
``.txt.j2`` (plain text) and ``.html.j2`` (autoescaped). The person's language is used when all
three exist, else the fallback language (``en``). Templates see ``name``, ``first_name``,
``brand``, ``unsubscribe_url`` and ``language``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from services.nurture import domain
from shared.events import EVENT_TYPES


def load_sequence(path: Path) -> domain.Sequence:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise domain.SequenceError(f"{path.name}: not valid YAML: {exc}") from None
    try:
        return domain.sequence_from_dict(data, known_events=EVENT_TYPES)
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

    def _exists(self, base: str) -> bool:
        names = set(self.env.list_templates())
        return all(f"{base}.{part}.j2" in names for part in PARTS)

    def check(self, templates: set[str]) -> None:
        """Every template a sequence names exists in the fallback language (checked at start)."""
        missing = sorted(t for t in templates if not self._exists(f"{t}.{self.fallback}"))
        if missing:
            raise TemplateNotFound(f"templates missing in {self.fallback!r}: {', '.join(missing)}")

    def render(self, template: str, language: str | None, context: dict[str, Any]) -> Rendered:
        for base in domain.template_candidates(template, language, fallback=self.fallback):
            if self._exists(base):
                lang = base.rsplit(".", 1)[1]
                values = {**context, "language": lang}
                subject, text, html = (self.env.get_template(f"{base}.{part}.j2").render(values) for part in PARTS)
                # A header is one line: a template's stray newlines must not break it.
                return Rendered(lang, " ".join(subject.split()), text, html)
        raise TemplateNotFound(f"{template} has no {self.fallback!r} version")

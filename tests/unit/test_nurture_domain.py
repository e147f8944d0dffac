"""Nurture's pure rules: sequences as data, due steps, consent, templates in en/bn/fa."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.nurture import domain
from services.nurture.content import Renderer, load_catalog, load_sequence
from services.nurture.settings import HERE
from shared.events import EVENT_TYPES

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CONTEXT = {
    "name": "Ada Lovelace",
    "first_name": "Ada",
    "brand": "Clientflow",
    "unsubscribe_url": "https://x.example/u?token=a&b=<c>",
}
FULL = CONTEXT | {
    "data": {
        "amount": "10.00",
        "currency": "EUR",
        "number": "2026-000001",
        "due_at": "2026-03-10T00:00:00Z",
        "effective_at": "2026-04-01T00:00:00Z",
        "title": "Website",
        "decline_code": "expired_card",
    },
    "days_before": 7,
    "payment_update_url": "https://pay.example/card",
    "booking_url": "https://book.example",
    "click": lambda url: f"https://t.example/c?u={url}",
    "survey_url": lambda n: f"https://t.example/s/{n}",
    "survey": "onboarding",
}


def spec(**changes: object) -> dict:
    base: dict = {
        "name": "welcome",
        "trigger": "lead.captured",
        "steps": [{"template": "welcome", "delay": 0}, {"template": "welcome_followup", "delay": "3d"}],
        "exit_on": ["deal.won"],
    }
    return base | changes


# --------------------------------------------------------------------------- sequences


def test_builtin_welcome_sequence_loads_and_starts_at_once() -> None:
    catalog = load_catalog(HERE / "sequences")
    welcome = catalog.sequences["welcome"]
    assert welcome.trigger == "lead.captured"
    assert welcome.steps[0].delay == timedelta(0) and welcome.steps[0].template == "welcome"
    assert all(step.category == "marketing" for step in welcome.steps)
    assert "deal.won" in welcome.exit_on
    assert catalog.triggered_by("lead.captured", segment="ideal") == [welcome]
    assert welcome in catalog.ended_by("deal.won") and catalog.ended_by("email.sent") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (90, timedelta(seconds=90)),
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("3d", timedelta(days=3)),
        ("2w", timedelta(weeks=2)),
        ("0", timedelta(0)),
    ],
)
def test_delays(value: object, expected: timedelta) -> None:
    assert domain.parse_delay(value) == expected


@pytest.mark.parametrize("value", [-1, "-3d", "3 days", "soon", True, 1.5, None])
def test_bad_delays_are_refused(value: object) -> None:
    with pytest.raises(domain.SequenceError):
        domain.parse_delay(value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Welcome!"}, "name"),
        ({"trigger": "lead.teleported"}, "trigger"),
        ({"steps": []}, "at least one step"),
        ({"steps": [{"template": "../etc/passwd"}]}, "template"),
        ({"steps": [{"template": "welcome", "delay": "soon"}]}, "step 0: delay"),
        ({"steps": [{"template": "welcome", "category": "spam"}]}, "category"),
        ({"exit_on": ["deal.vanished"]}, "exit_on"),
        ({"exit_on": ["lead.captured"]}, "both start and end"),
        ({"segments": "ideal"}, "segments"),
    ],
)
def test_invalid_sequences_say_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(domain.SequenceError, match=message):
        domain.sequence_from_dict(spec(**changes), known_events=EVENT_TYPES)


def test_bad_yaml_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed", encoding="utf-8")
    with pytest.raises(domain.SequenceError, match=r"broken.yaml"):
        load_sequence(tmp_path / "broken.yaml")


def test_two_sequences_with_one_name_are_refused() -> None:
    one = domain.sequence_from_dict(spec(), known_events=EVENT_TYPES)
    with pytest.raises(domain.SequenceError, match="two sequences"):
        domain.Catalog.of([one, one])


def test_segments_filter_enrollment() -> None:
    only_ideal = domain.sequence_from_dict(spec(segments=["ideal"]), known_events=EVENT_TYPES)
    catalog = domain.Catalog.of([only_ideal])
    assert catalog.triggered_by("lead.captured", segment="ideal") == [only_ideal]
    assert catalog.triggered_by("lead.captured", segment="default") == []


def test_delays_add_up_from_enrollment() -> None:
    sequence = domain.sequence_from_dict(
        spec(steps=[{"template": "a", "delay": 0}, {"template": "b", "delay": "1d"}, {"template": "c", "delay": "2d"}]),
        known_events=EVENT_TYPES,
    )
    assert [(s.number, due) for s, due in sequence.schedule(T0)] == [
        (0, T0),
        (1, T0 + timedelta(days=1)),
        (2, T0 + timedelta(days=3)),
    ]


# --------------------------------------------------------------------------- due steps


def test_due_steps_are_the_past_ones_oldest_first_and_held_people_wait() -> None:
    ada, bob, cy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    late = domain.PendingStep(uuid.uuid4(), ada, T0 - timedelta(hours=2))
    now_due = domain.PendingStep(uuid.uuid4(), bob, T0)
    future = domain.PendingStep(uuid.uuid4(), bob, T0 + timedelta(seconds=1))
    held = domain.PendingStep(uuid.uuid4(), cy, T0 - timedelta(days=1))
    pending = [future, now_due, held, late]
    assert domain.select_due(pending, now=T0, held=set(), limit=10) == [held, late, now_due]
    assert domain.select_due(pending, now=T0, held={cy}, limit=10) == [late, now_due]
    assert domain.select_due(pending, now=T0, held={cy}, limit=1) == [late]


# --------------------------------------------------------------------------- consent


@pytest.mark.parametrize(
    ("category", "consent", "address", "erased", "expected"),
    [
        ("marketing", True, "a@x.example", False, domain.Delivery(True)),
        ("marketing", False, "a@x.example", False, domain.Delivery(False, "no_consent")),
        ("transactional", False, "a@x.example", False, domain.Delivery(True)),
        ("marketing", True, None, False, domain.Delivery(False, "no_address")),
        ("transactional", True, "a@x.example", True, domain.Delivery(False, "no_address")),
    ],
)
def test_marketing_needs_consent_and_everything_needs_an_address(
    category: str, consent: bool, address: str | None, erased: bool, expected: domain.Delivery
) -> None:
    assert domain.delivery(category=category, consent_marketing=consent, address=address, erased=erased) == expected


def test_an_unticked_box_later_does_not_withdraw_consent() -> None:
    assert domain.merged_consent(True, False) is True
    assert domain.merged_consent(False, True) is True
    assert domain.merged_consent(False, False) is False


def test_unsubscribe_token_is_signed() -> None:
    lead_id = uuid.uuid4()
    token = domain.unsubscribe_token("secret", lead_id)
    assert domain.verify_unsubscribe_token("secret", token) == lead_id
    assert domain.verify_unsubscribe_token("other", token) is None
    assert domain.verify_unsubscribe_token("secret", f"{uuid.uuid4().hex}.{token.split('.')[1]}") is None
    assert domain.verify_unsubscribe_token("secret", "garbage") is None


# --------------------------------------------------------------------------- templates


def test_template_language_falls_back_to_english() -> None:
    assert domain.template_candidates("welcome", "fa-IR") == ["welcome.fa", "welcome.en"]
    assert domain.template_candidates("welcome", "en") == ["welcome.en"]
    assert domain.template_candidates("welcome", None) == ["welcome.en"]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(HERE / "templates")


@pytest.mark.parametrize(
    ("language", "subject_word", "html_marks"),
    [
        ("en", "Welcome", ['lang="en"']),
        ("bn", "স্বাগতম", ['lang="bn"']),
        ("fa", "خوش آمدید", ['lang="fa"', 'dir="rtl"']),
    ],
)
def test_welcome_renders_in_english_bengali_and_persian(
    renderer: Renderer, language: str, subject_word: str, html_marks: list[str]
) -> None:
    rendered = renderer.render("welcome", language, CONTEXT)
    assert rendered.language == language
    assert subject_word in rendered.subject and "Ada" in rendered.subject and "\n" not in rendered.subject
    assert "Ada" in rendered.text and CONTEXT["unsubscribe_url"] in rendered.text
    assert all(mark in rendered.html for mark in html_marks)
    # The HTML part escapes what it is given; the text part does not need to.
    assert "&amp;b=&lt;c&gt;" in rendered.html


def test_new_lead_and_payment_templates_exist_in_every_language(renderer: Renderer) -> None:
    catalog = load_catalog(HERE / "sequences")
    renderer.check(catalog.templates())
    lead_facing = {s.template for name in ("welcome", "nurture") for s in catalog.sequences[name].steps}
    lead_facing.add("payment_failed")
    for template in lead_facing:
        for language in ("en", "bn", "fa"):
            assert renderer.render(template, language, FULL).language == language
    for template in catalog.templates():  # the others fall back to English
        assert renderer.render(template, "fa", FULL).language in ("en", "fa")


def test_unknown_language_uses_english(renderer: Renderer) -> None:
    rendered = renderer.render("welcome", "sw", CONTEXT)
    assert rendered.language == "en" and rendered.subject == "Welcome to Clientflow, Ada"


def test_no_name_still_reads_well(renderer: Renderer) -> None:
    rendered = renderer.render("welcome", "en", CONTEXT | {"name": "", "first_name": ""})
    assert rendered.subject == "Welcome to Clientflow" and rendered.text.startswith("Hello,")

"""Pure rules of issue 19, items 7-9, by hand-computed cases: which company account a person
belongs to, what notes make a let-go candidate, when a manual tier is in force, and what a
ticked consent box does after an unsubscribe."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from services.leads.capture import fill_empty
from services.leads.commands import LeadIn
from services.leads.domain.accounts import AccountKey, account_key
from services.leads.store import Lead
from services.nurture.domain import consent
from services.retention.domain.tiers import (
    ManualTier,
    effective_tier,
    let_go_from_notes,
    with_notes,
)

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- accounts (leads)


def test_an_account_is_the_work_domain_and_the_normalised_company_name() -> None:
    assert account_key("ada@Acme.example", "Acme Ltd") == AccountKey("acme.example", "acme")
    assert account_key("bob@acme.example", "ACME, Inc.") == AccountKey("acme.example", "acme")
    assert account_key("ada@www.acme.example", "The Acme Company") == AccountKey("acme.example", "acme")
    # Same domain, another name: another company (a holding's mail server).
    assert account_key("dave@acme.example", "Acme Digital GmbH") == AccountKey("acme.example", "acme digital")


def test_free_mail_or_no_company_name_is_no_account() -> None:
    assert account_key("ada@gmail.com", "Acme Ltd") is None
    assert account_key("ada@acme.example", None) is None
    assert account_key("ada@acme.example", "Ltd") is None  # nothing left once normalised
    assert account_key(None, "Acme") is None


def test_a_duplicate_touch_fills_only_what_is_empty() -> None:
    lead = Lead(name="Ada", company="Acme", job_title=None, industry=None, needs=[], currency=None, budget=None)
    lead.employees = None
    lead.country = None
    lead.timeline = None
    lead.brief = None
    lead.annual_revenue = None
    data = LeadIn(
        name="Ada L.",
        email="ada@acme.example",
        channel="website",
        company="Other",
        job_title="CTO",
        needs=["seo"],
        currency="EUR",
        budget="5000",
    )
    filled = fill_empty(lead, data)
    assert filled == ["job_title", "needs", "currency", "budget"]
    assert (lead.name, lead.company, lead.job_title, lead.needs) == ("Ada", "Acme", "CTO", ["seo"])
    assert str(lead.budget) == "5000" and lead.currency == "EUR"
    # A budget in another currency than the lead's is not mixed in.
    lead2 = Lead(name="Bob", needs=["x"], currency="GBP", budget=None, annual_revenue=None)
    for name in ("company", "job_title", "industry", "employees", "country", "timeline", "brief"):
        setattr(lead2, name, "kept" if name == "company" else None)
    assert fill_empty(lead2, data) == ["job_title"]
    assert lead2.budget is None


# --------------------------------------------------------------------------- notes and manual tiers (retention)


def notes(*ago_and_tags: tuple[int, list[str]]) -> list[tuple[datetime, list[str]]]:
    return [(NOW - timedelta(days=days), tags) for days, tags in ago_and_tags]


def test_two_mistreats_staff_notes_within_90_days_make_a_let_go_candidate() -> None:
    assert let_go_from_notes(notes((1, ["mistreats_staff"])), NOW) == []
    assert let_go_from_notes(notes((1, ["mistreats_staff"]), (89, ["mistreats_staff", "scope_creep"])), NOW) == [
        "mistreats_staff noted 2 times in 90 days"
    ]
    # 91 days ago is outside the window; a note from the future is not counted.
    assert let_go_from_notes(notes((1, ["mistreats_staff"]), (91, ["mistreats_staff"])), NOW) == []
    assert let_go_from_notes(notes((1, ["blames_us"]), (-1, ["blames_us"])), NOW) == []
    # Each tag counts on its own; other tags never do.
    both = notes((1, ["blames_us", "mistreats_staff"]), (2, ["blames_us"]), (3, ["mistreats_staff"]))
    assert let_go_from_notes(both, NOW) == [
        "mistreats_staff noted 2 times in 90 days",
        "blames_us noted 2 times in 90 days",
    ]
    assert let_go_from_notes(notes((1, ["slow_payer"]), (2, ["slow_payer"]), (3, ["scope_creep"])), NOW) == []
    # The same tag twice on one note is one note.
    assert let_go_from_notes(notes((1, ["blames_us", "blames_us"])), NOW) == []


def test_notes_make_the_computed_tier_fire() -> None:
    assert with_notes("good", ["pays"], []) == ("good", ["pays"])
    assert with_notes("best", ["big"], ["blames_us noted 2 times in 90 days"]) == (
        "fire",
        ["blames_us noted 2 times in 90 days"],
    )
    assert with_notes("fire", ["late payments: 3 of 4"], ["x"]) == ("fire", ["late payments: 3 of 4", "x"])


def test_a_manual_tier_wins_until_its_day() -> None:
    manual = ManualTier(tier="good", reason="vouched for", until=date(2026, 6, 20), set_by="boss")
    assert effective_tier("fire", ["costly"], manual, NOW) == ("good", ["set by hand: vouched for"], True)
    # On the day itself it has ended (until is exclusive, 00:00 UTC).
    assert effective_tier("fire", ["costly"], manual, datetime(2026, 6, 20, tzinfo=UTC)) == (
        "fire",
        ["costly"],
        False,
    )
    assert manual.in_force(datetime(2026, 6, 19, 23, 59, tzinfo=UTC))
    assert effective_tier("tolerable", ["one-off"], None, NOW) == ("tolerable", ["one-off"], False)


# --------------------------------------------------------------------------- consent (nurture)


def test_a_ticked_box_grants_consent_unless_it_was_withdrawn() -> None:
    assert consent.on_capture(ticked=True, consent_now=False, withdrawn=False) == "grant"
    assert consent.on_capture(ticked=True, consent_now=False, withdrawn=True) == "request"
    assert consent.on_capture(ticked=True, consent_now=True, withdrawn=True) == "none"
    assert consent.on_capture(ticked=False, consent_now=False, withdrawn=False) == "none"
    assert consent.merged_consent(current=False, incoming=True, withdrawn=False) is True
    assert consent.merged_consent(current=False, incoming=True, withdrawn=True) is False
    assert consent.merged_consent(current=True, incoming=False, withdrawn=True) is True  # an empty box takes nothing


def test_the_confirmation_link_is_signed() -> None:
    request_id = uuid.uuid4()
    token = consent.confirm_token("secret", request_id)
    assert consent.verify_confirm_token("secret", token) == request_id
    assert consent.verify_confirm_token("other", token) is None
    assert consent.verify_confirm_token("secret", token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert consent.verify_confirm_token("secret", "nonsense") is None
    assert consent.verify_confirm_token("secret", f"{uuid.uuid4().hex}.{token.split('.')[1]}") is None

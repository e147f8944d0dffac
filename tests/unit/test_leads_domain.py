"""Leads' pure rules: scoring, red flags, dedupe, qualification, engagement decay, stages, scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.leads import domain, importer
from services.leads.domain import Intake

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
IDEAL = Intake(
    industry="SaaS",
    employees=40,
    annual_revenue=Decimal("2000000"),
    country="GB",
    job_title="Co-Founder",
    needs=("SEO",),
    budget=Decimal("8000"),
    brief="grow",
    timeline="next quarter",
)


def test_fit_scores_weighted_criteria_with_matched_and_missed() -> None:
    assert domain.fit_score(IDEAL).score == 100
    fit = domain.fit_score(Intake(industry="mining", employees=3, country="GB", job_title="Intern"))
    assert fit.matched == ["country"] and "decision_maker" in fit.missed and fit.score == 10


def test_icp_from_yaml_refuses_what_is_wrong() -> None:
    icp = domain.IdealClientProfile.from_yaml(
        "criteria:\n  country: {weight: 3, values: [fr]}\n  budget: {weight: 1, min: 10}\n"
    )
    assert domain.fit_score(Intake(country="FR"), icp).score == 75
    for text, message in [
        ("criteria: {zodiac: {weight: 1}}", "unknown criterion"),
        ("criteria: {employees: {weight: 1, min: 9, max: 2}}", "above max"),
        ("criteria: {industry: {weight: 1}}", "needs a list of values"),
        ("criteria: {budget: {weight: -1, min: 1}}", "weight"),
        ("[1, 2", "not valid YAML"),
        ("just text", "mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            domain.IdealClientProfile.from_yaml(text)
    assert domain.IdealClientProfile.from_dict(domain.DEFAULT_ICP.to_dict()) == domain.DEFAULT_ICP


def test_intake_red_flags_carry_evidence() -> None:
    assert domain.intake_red_flags(IDEAL) == []
    flags = {
        f.name: f.evidence
        for f in domain.intake_red_flags(
            Intake(
                timeline="as soon as possible",
                brief="A one-off landing page, we have never done marketing, not sure what we need",
            )
        )
    }
    assert set(flags) == {
        "no_defined_budget",
        "must_be_fast",
        "one_off_project",
        "no_marketing_experience",
        "no_research",
    }
    assert "as soon as possible" in flags["must_be_fast"]
    assert {f.name for f in domain.intake_red_flags(Intake(budget=Decimal(0), brief="  "))} == {
        "no_written_brief",
        "no_defined_budget",
    }


def test_add_flag_once_and_only_known_names() -> None:
    flags = domain.add_flag([], "refuses_deposit", "said no", source="sales", at=NOW)
    assert flags and flags[0]["evidence"] == "said no"
    assert domain.add_flag(flags, "refuses_deposit", "again", source="sales", at=NOW) is None
    with pytest.raises(ValueError, match="unknown red flag"):
        domain.add_flag([], "grumpy", "x", source="sales", at=NOW)


def test_dedupe_keys() -> None:
    assert domain.normalise_email(" Ada.L+news@GoogleMail.com ") == "adal@gmail.com"
    assert domain.normalise_email("Ada.L+x@Acme.io") == "ada.l@acme.io"
    assert domain.company_domain("ada@www.acme.io") == "acme.io"
    assert domain.company_domain("ada@gmail.com") is None
    assert domain.normalise_name(" Ada  LOVELACE. ") == domain.normalise_name("ada lovelace")


def test_bant_needs_need_and_enough_of_the_rest() -> None:
    assert domain.qualify(domain.Bant(True, True, True, False), required=3).qualified
    no_need = domain.qualify(domain.Bant(True, True, False, True), required=3)
    assert not no_need.qualified and no_need.reasons == ["no_need"]
    assert domain.qualify(domain.Bant(True, True, True, True), required=4, extra_reasons=["competitor"]).reasons == [
        "competitor"
    ]
    suggested = domain.suggested_bant(IDEAL, minimum_budget=Decimal(10_000))
    assert suggested == domain.Bant(budget=False, authority=True, need=True, timeline=True)


def test_engagement_decays_by_half_life_and_absorbs_late_events() -> None:
    assert domain.engagement_score(Decimal(40), since=NOW, now=NOW + timedelta(days=14), half_life_days=14) == 20
    points, since = domain.engage(
        Decimal(40), since=NOW, at=NOW + timedelta(days=14), weight=Decimal(10), half_life_days=14
    )
    assert (points, since) == (Decimal("30.0000"), NOW + timedelta(days=14))
    late, kept = domain.engage(
        Decimal(10), since=NOW, at=NOW - timedelta(days=14), weight=Decimal(10), half_life_days=14
    )
    assert (late, kept) == (Decimal("15.0000"), NOW)
    capped, _ = domain.engage(Decimal(99), since=NOW, at=NOW, weight=Decimal(50), half_life_days=14)
    assert capped == 100


def test_stage_rules_move_forward_on_signals_and_backwards_on_churn() -> None:
    assert domain.next_stage("awareness", "email.clicked") == "interest"
    assert domain.next_stage("decision", "email.clicked") is None  # never drags back
    assert domain.next_stage("action", "cancellation.completed") == "churned"
    assert domain.next_stage("churned", "deal.proposed") == "decision"  # a churned client returns
    assert domain.next_stage("churned", "lead.returned") == "interest"
    assert domain.next_stage("awareness", "referral.made") is None
    assert domain.next_stage("action", "referral.made") == "advocacy"
    assert domain.next_stage("action", "lead.disqualified") is None
    assert domain.next_stage("disqualified", "lead.qualified") == "consideration"


def test_a_deposit_that_cleared_before_the_churn_does_not_bring_the_client_back() -> None:
    # deposit.cleared (payments) and cancellation.completed (cancellations) arrive in any order
    churned_at = NOW + timedelta(minutes=5)
    assert domain.next_stage("churned", "deposit.cleared", occurred_at=NOW, entered_at=churned_at) is None
    assert domain.next_stage("decision", "cancellation.completed", occurred_at=churned_at, entered_at=NOW) == "churned"
    later = churned_at + timedelta(days=30)  # a client who came back and paid again
    assert domain.next_stage("churned", "deposit.cleared", occurred_at=later, entered_at=churned_at) == "action"


def test_funnel_counts_and_conversion() -> None:
    counts = domain.funnel_counts([("awareness", 0), ("decision", 3), ("churned", 4), ("disqualified", 0)])
    assert counts.total == 4 and counts.reached["decision"] == 2 and counts.reached["action"] == 1
    assert counts.overall() == "0.2500"
    assert {"from_stage": "decision", "to_stage": "action", "rate": "0.5000"} in counts.conversion()
    assert domain.period_of(NOW, "quarter") == "2026-Q1" and domain.period_of(NOW, "week") == "2026-W09"


def test_deposit_share_follows_risk() -> None:
    kw = {
        "base": Decimal("0.3"),
        "per_flag": Decimal("0.1"),
        "maximum": Decimal("0.8"),
        "low_fit_extra": Decimal("0.1"),
        "low_fit_threshold": 40,
    }
    assert domain.deposit_share([], 90, **kw) == Decimal("0.30")
    assert domain.deposit_share(["a", "b"], 20, **kw) == Decimal("0.60")
    assert domain.deposit_share([], 90, tier="fire", **kw) == Decimal("0.80")
    assert domain.deposit_share([], 90, tier="best", **kw) == Decimal("0.20")


LINES = [
    {"description": "Design of five landing pages", "hours": "20", "amount": "2000"},
    {"description": "SEO audit", "amount": "500"},
]


def test_change_request_scope_against_the_estimate() -> None:
    inside = domain.assess_change(
        LINES, description="Tweak landing page design", hours=Decimal(5), amount=None, hourly_rate=None, used_hours={}
    )
    assert inside.in_scope and inside.line == 0 and inside.amount == 0
    over = domain.assess_change(
        LINES,
        description="Tweak landing page design",
        hours=Decimal(5),
        amount=None,
        hourly_rate=Decimal(100),
        used_hours={0: Decimal(18)},
    )
    assert not over.in_scope and over.amount == Decimal("500.00") and "2 hours left" in over.reason
    app = domain.assess_change(
        LINES, description="A mobile app", hours=None, amount=Decimal(900), hourly_rate=None, used_hours={}
    )
    assert not app.in_scope and app.line is None and app.amount == 900
    with pytest.raises(ValueError, match="needs an amount"):
        domain.assess_change(
            LINES, description="A mobile app", hours=Decimal(2), amount=None, hourly_rate=None, used_hours={}
        )
    with pytest.raises(ValueError, match="not on the estimate"):
        domain.assess_change(LINES, description="x", hours=None, amount=None, hourly_rate=None, used_hours={}, line=7)
    forced = domain.assess_change(
        LINES, description="A mobile app", hours=None, amount=None, hourly_rate=None, used_hours={}, in_scope=True
    )
    assert forced.in_scope and forced.reason == "decided by sales"


def test_csv_rows_become_leads_or_reasons() -> None:
    text = "name,email,channel,needs,utm_source,consent_marketing\nAda,ada@x.io,SEO,a; b,g,yes\nBo,bo,web,,,perhaps\nshort\n\n"
    rows, ignored = importer.parse(text, first_row=11, max_rows=10)
    assert ignored == []
    (n1, ada), (n2, bo), (n3, short) = rows
    assert (n1, n2, n3) == (11, 12, 13)
    assert ada.channel == "seo" and ada.needs == ["a", "b"] and ada.utm == {"source": "g"} and ada.consent_marketing
    assert any("invalid email" in e for e in bo) and any("consent_marketing" in e for e in bo)
    assert "fields, the header has 6" in short[0]
    with pytest.raises(importer.ImportError_, match="missing required"):
        importer.parse("name,email\n", max_rows=1)
    with pytest.raises(importer.ImportError_, match="more than 1 rows"):
        importer.parse("name,email,channel\na,a@b.c,seo\nb,b@b.c,seo\n", max_rows=1)

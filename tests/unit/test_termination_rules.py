"""The pure rules of ending a relationship on the agency's side, by hand-computed cases: the
termination's dates and status, the economics split (terminations are not churn), the final
invoice's work done to date, the returning-client match and the surcharge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.billing.domain import terminations as billing_rules
from services.leads.domain import returning
from services.leads.settings import Settings as LeadsSettings
from services.retention import domain
from services.retention.domain.economics import EconomicsInput, LeadFacts, Movement

T0 = datetime(2031, 1, 1, tzinfo=UTC)


def at(day: int, month: int = 1) -> datetime:
    return datetime(2031, month, day, tzinfo=UTC)


# --------------------------------------------------------------------------- retention


def test_a_termination_takes_effect_after_its_notice_and_is_ended_from_then() -> None:
    assert domain.termination_effective_at(T0, 14) == T0 + timedelta(days=14)
    assert domain.termination_effective_at(T0, 0) == T0
    for bad in (-1, 366):
        with pytest.raises(ValueError, match="notice_days"):
            domain.termination_effective_at(T0, bad)
    effective = T0 + timedelta(days=14)
    assert domain.termination_status(effective, T0) == "notice"
    assert domain.termination_status(effective, effective - timedelta(seconds=1)) == "notice"
    assert domain.termination_status(effective, effective) == "ended"
    assert domain.ended_by_termination("terminated:fired")
    assert not domain.ended_by_termination("non_payment") and not domain.ended_by_termination(None)


def test_terminations_are_split_from_voluntary_and_involuntary_churn() -> None:
    # Four clients paying 100 each from January; in February A cancels (voluntary), B is ended
    # by dunning (non-payment), C is terminated by the agency, D stays.
    moves = [Movement(c, at(1), "new", Decimal(100), "EUR", 1) for c in "ABCD"]
    moves += [
        Movement("A", at(10, 2), "churn", Decimal(100), "EUR", -1),
        Movement("B", at(12, 2), "churn", Decimal(100), "EUR", -1),
        Movement("C", at(20, 2), domain.TERMINATED, Decimal(100), "EUR", -1),
    ]
    data = EconomicsInput(
        start=at(1, 2),
        end=at(1, 3),
        currency="EUR",
        gross_margin=Decimal("0.5"),
        leads=[LeadFacts(c, "ads" if c != "C" else "seo", at(1, 1) - timedelta(days=30)) for c in "ABCD"],
        movements=moves,
        spends=[],
        terminations=[(at(20, 2), "C", "fired")],
        involuntary=[(at(12, 2), "B")],
    )
    figures = domain.economics(data)
    # Churn the agency is judged on: A and B out of 4 (not C).
    assert figures["clients_lost"] == 2 and figures["logo_churn"] == Decimal("0.5000")
    assert figures["churn_split"] == {"voluntary": 1, "involuntary": 1, "terminated": 1}
    # Revenue churn 200 / 400; NRR = GRR = (400 - 200) / 400 (the 100 terminated is not churn).
    assert figures["revenue_churn"] == Decimal("0.5000")
    assert figures["nrr"] == figures["grr"] == Decimal("0.5000")
    assert figures["mrr_movements"]["churn"] == Decimal(200)
    assert "terminated" not in figures["mrr_movements"]
    # MRR at the end: only D.
    assert figures["mrr_end"] == Decimal(100)
    assert figures["terminations"] == {
        "count": 1,
        "mrr": Decimal("100.00"),
        "by_reason": {"fired": 1},
        "by_channel": {"seo": {"count": 1, "mrr": Decimal("100.00")}},
    }


def test_a_client_with_two_retainers_terminated_is_one_termination_not_a_contraction() -> None:
    lost = domain.split_lost(
        {"X"},
        {
            "X": [
                Movement("X", at(1), "new", Decimal(100), "EUR", 1),
                Movement("X", at(1), "expansion", Decimal(50), "EUR", 0),
                Movement("X", at(5, 2), domain.TERMINATED, Decimal(50), "EUR", 0),
                Movement("X", at(5, 2), domain.TERMINATED, Decimal(100), "EUR", -1),
            ]
        },
        start=at(1, 2),
        end=at(1, 3),
    )
    assert lost.terminated == {"X"} and not lost.churned


# --------------------------------------------------------------------------- billing


def test_the_final_invoice_bills_the_work_done_to_date_of_each_live_project() -> None:
    project = billing_rules.ProjectFacts(
        title="Site", currency="EUR", total=Decimal("3000"), invoiced=Decimal("900"), cleared=True, written_off=False
    )
    assert billing_rules.work_done_to_date(project) == Decimal("2100.00")
    # Fully invoiced, deposit never cleared (no work may start), or written off: nothing.
    for other in (
        billing_rules.ProjectFacts("Site", "EUR", Decimal("3000"), Decimal("3000"), True, False),
        billing_rules.ProjectFacts("Site", "EUR", Decimal("3000"), Decimal("900"), False, False),
        billing_rules.ProjectFacts("Site", "EUR", Decimal("3000"), Decimal("900"), True, True),
    ):
        assert billing_rules.work_done_to_date(other) == Decimal("0.00")
    assert billing_rules.work_done_text("Site") == "Work done to date: Site"
    assert billing_rules.termination_reason("fired") == "terminated:fired"


# --------------------------------------------------------------------------- leads


def test_the_same_company_is_the_same_email_domain_unless_free_mail_or_the_same_name() -> None:
    assert returning.normalise_company("Ghasemi Trading Ltd.") == returning.normalise_company("GHASEMI  trading")
    assert returning.normalise_company("The Acme Co") == "acme"
    assert returning.normalise_company("Ltd") is None and returning.normalise_company(None) is None
    fired = returning.Terminated(
        lead_id="L1",
        identity=returning.Identity.of(email="Dariush+x@Ghasemi.example", company="Ghasemi Trading Ltd"),
        reason="fired",
        terminated_at=T0,
    )
    gmail = returning.Terminated(
        lead_id="L2",
        identity=returning.Identity.of(email="some.one@gmail.com", company=None),
        reason="scope_abuse",
        terminated_at=T0,
    )
    known = [fired, gmail]
    same = returning.same_client
    assert same(returning.Identity.of(email="dariush@ghasemi.example", company=None), known) == (fired, "email")
    assert same(returning.Identity.of(email="shirin@ghasemi.example", company=None), known) == (fired, "domain")
    assert same(returning.Identity.of(email="a@other.example", company="ghasemi trading"), known) == (
        fired,
        "company",
    )
    # Free mail says nothing of a company: another Gmail user is nobody we let go.
    assert same(returning.Identity.of(email="else@gmail.com", company=None), known) is None
    assert same(returning.Identity.of(email="someone@gmail.com", company=None), known) == (gmail, "email")
    evidence = returning.evidence(fired, "domain")
    assert "L1" in evidence and "2031-01-01" in evidence and "fired" in evidence


def test_the_surcharge_makes_the_quote_n_times_and_is_bounded() -> None:
    line, fee = returning.surcharged(
        lines_total=Decimal("1000"), monthly_fee=None, multiplier=Decimal(3), currency="EUR"
    )
    assert (line, fee) == (Decimal("2000.00"), None)  # 1000 + 2000 = 3 x 1000
    line, fee = returning.surcharged(
        lines_total=Decimal("500"), monthly_fee=Decimal("800"), multiplier=Decimal("2.5"), currency="JPY"
    )
    assert (line, fee) == (Decimal("750"), Decimal("2000"))
    assert returning.surcharge_text(Decimal("3.0000")) == "Returning-client surcharge (x3)"
    assert returning.check_multiplier(Decimal(2)) == Decimal(2)
    with pytest.raises(ValueError):
        returning.check_multiplier(Decimal("10.5"))
    assert LeadsSettings(returning_surcharge=Decimal(4)).returning_surcharge == Decimal(4)
    for bad in ("1.5", "11"):
        with pytest.raises(ValidationError, match="returning_surcharge"):
            LeadsSettings(returning_surcharge=Decimal(bad))

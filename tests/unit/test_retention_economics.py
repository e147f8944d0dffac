"""Retention's economics, tiers, churn risk and loyalty on small datasets computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

from services.retention import domain
from services.retention.domain import LeadFacts, Movement, Spend


def t(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


# Five retainer clients in EUR:
#   A new 2025-12-01 1000, expansion 2026-02-01 +500            (best)
#   B new 2025-12-15 2000, churn 2026-02-20 2000                (good)
#   C new 2025-11-10 1000, contraction 2026-01-20 -200          (fire)
#   D new 2026-01-10 1500 (captured 2026-01-05, ads)            (good)
#   E new 2025-12-20 500, paused 2026-02-10: a client, not MRR  (tolerable)
MOVES = [
    Movement("A", t(2025, 12, 1), "new", D(1000), "EUR", 1),
    Movement("A", t(2026, 2, 1), "expansion", D(500), "EUR"),
    Movement("B", t(2025, 12, 15), "new", D(2000), "EUR", 1),
    Movement("B", t(2026, 2, 20), "churn", D(2000), "EUR", -1),
    Movement("C", t(2025, 11, 10), "new", D(1000), "EUR", 1),
    Movement("C", t(2026, 1, 20), "contraction", D(200), "EUR"),
    Movement("D", t(2026, 1, 10), "new", D(1500), "EUR", 1),
    Movement("E", t(2025, 12, 20), "new", D(500), "EUR", 1),
    Movement("E", t(2026, 2, 10), "pause", D(500), "EUR"),
    Movement("X", t(2026, 1, 5), "new", D(9999), "USD", 1),  # another currency: counted as a logo only
]
LEADS = [
    LeadFacts("A", "seo", t(2025, 11, 1), client_at=t(2025, 12, 1), tier="best"),
    LeadFacts("B", "seo", t(2025, 11, 2), client_at=t(2025, 12, 15), tier="good"),
    LeadFacts("C", "ads", t(2025, 10, 1), client_at=t(2025, 11, 10), tier="fire"),
    LeadFacts("E", "ads", t(2025, 12, 1), client_at=t(2025, 12, 20), tier="tolerable"),
    LeadFacts("D", "ads", t(2026, 1, 5), t(2026, 1, 6), t(2026, 1, 7), t(2026, 1, 8), t(2026, 1, 10), "good"),
    LeadFacts("L2", "ads", t(2026, 1, 15), t(2026, 1, 16), t(2026, 1, 17)),
    LeadFacts("L3", "ads", t(2026, 2, 1), t(2026, 2, 2)),
    LeadFacts("L4", "seo", t(2026, 3, 1)),
]
SPEND = [
    Spend("ads", date(2026, 1, 1), date(2026, 1, 31), D(3000), "EUR"),
    # 31 days, 17 of them (15 March to 31 March) inside the period: 620 * 17 / 31 = 340
    Spend("seo", date(2026, 3, 15), date(2026, 4, 14), D(620), "EUR"),
    Spend("seo", date(2026, 1, 1), date(2026, 1, 31), D(777), "USD"),
]


PERIOD_START = t(2026, 1, 1)
PERIOD_END = t(2026, 4, 1)


def figures(start: datetime = PERIOD_START, end: datetime = PERIOD_END, movements=MOVES) -> dict:
    return domain.economics(
        domain.EconomicsInput(
            start=start,
            end=end,
            currency="EUR",
            gross_margin=D("0.5"),
            leads=LEADS,
            movements=movements,
            spends=SPEND,
            leaked=[(t(2026, 2, 5), D(300), "EUR"), (t(2025, 12, 1), D(100), "EUR")],
            exits=[(t(2026, 2, 20), "price"), (t(2025, 12, 1), "other")],
        )
    )


def test_logo_churn_mrr_movements_nrr_and_grr() -> None:
    f = figures()
    # at the start (1 January): A, B, C, E are clients; B left: 1 of 4. At the end: A, C, D, E, X
    assert (f["clients_at_start"], f["clients_lost"], f["clients_at_end"]) == (4, 1, 5)
    assert f["logo_churn"] == D("0.2500")
    assert f["months"] == D(3)
    assert f["monthly_logo_churn"] == D("0.0833")  # 0.25 / 3
    # EUR MRR at the start: 1000 + 2000 + 1000 + 500 = 4500
    assert f["mrr_start"] == D(4500)
    assert f["mrr_movements"] == {
        "new": D(1500),
        "expansion": D(500),
        "contraction": D(200),
        "churn": D(2000),
        "pause": D(500),
        "resume": D(0),
    }
    # 4500 + 1500 + 500 - 200 - 2000 - 500 = 3800 (the paused client is not MRR)
    assert f["mrr_end"] == D(3800)
    # NRR (4500 + 500 - 200 - 2000) / 4500 = 0.6222; GRR (4500 - 200 - 2000) / 4500 = 0.5111
    assert (f["nrr"], f["grr"]) == (D("0.6222"), D("0.5111"))
    assert f["revenue_churn"] == D("0.4889")  # (200 + 2000) / 4500


def test_cac_arpa_ltv_and_payback() -> None:
    f = figures()
    # spend 3000 (ads, January) + 340 (seo, pro rata) = 3340; one new client (D)
    assert (f["spend"], f["new_clients"], f["cac"]) == (D("3340.00"), 1, D("3340.00"))
    # ARPA: 3800 over the three clients paying EUR at the end (A 1500, C 800, D 1500)
    assert f["arpa"] == D("1266.67")
    # LTV = 1266.67 * 0.5 / 0.0833 = 7603.06
    assert f["ltv"] == D("7603.06")
    assert f["ltv_cac"] == D("2.28")  # 7603.06 / 3340
    assert f["payback_months"] == D("5.27")  # 3340 / 633.335
    assert f["fire_clients"] == 1 and f["fire_share"] == D("0.2000")  # C of A, C, D, E, X
    assert f["leaked_revenue"] == D("300.00")
    assert f["exit_reasons"] == {"price": 1}


def test_funnel_conversion_at_each_stage() -> None:
    f = figures()
    assert f["leads"] == 4  # D, L2, L3, L4 captured in the period
    assert [(s["stage"], s["count"], s["from_previous"], s["from_leads"]) for s in f["funnel"]] == [
        ("leads", 4, None, D("1.0000")),
        ("qualified", 3, D("0.7500"), D("0.7500")),
        ("proposed", 2, D("0.6667"), D("0.5000")),
        ("won", 1, D("0.5000"), D("0.2500")),
        ("clients", 1, D("1.0000"), D("0.2500")),
    ]


def test_cohort_table_by_acquisition_month() -> None:
    f = figures(start=t(2025, 11, 1))
    assert f["cohorts"] == [
        {"cohort": "2025-11", "clients": 1, "retention": [D(1), D(1), D(1), D(1), D(1)]},
        # A, B, E; B left on 20 February: 2 of 3 at the end of March and of April... (1 Mar, 1 Apr)
        {"cohort": "2025-12", "clients": 3, "retention": [D(1), D(1), D("0.6667"), D("0.6667")]},
        {"cohort": "2026-01", "clients": 2, "retention": [D(1), D(1), D(1)]},  # D and X
    ]


def test_paused_client_is_neither_churned_nor_mrr() -> None:
    f = figures(start=t(2026, 2, 1), end=t(2026, 3, 1))
    assert f["clients_lost"] == 1  # B only; E paused on 10 February is still a client
    assert f["mrr_movements"]["churn"] == D(2000) and f["mrr_movements"]["pause"] == D(500)


def test_no_data_gives_reasons_not_divisions_by_zero() -> None:
    f = domain.economics(
        domain.EconomicsInput(
            start=t(2026, 1, 1),
            end=t(2026, 2, 1),
            currency="EUR",
            gross_margin=D("0.5"),
            leads=[],
            movements=[],
            spends=[],
        )
    )
    for name in ("cac", "arpa", "ltv", "ltv_cac", "payback_months", "logo_churn", "nrr", "grr", "fire_share"):
        assert f[name] is None, name
    assert set(f["reasons"]) >= {"cac", "arpa", "ltv", "logo_churn", "nrr", "grr", "funnel"}
    assert f["cohorts"] == []


def test_no_churn_means_unbounded_ltv() -> None:
    f = figures(start=t(2026, 3, 1), end=t(2026, 4, 1))
    assert f["clients_lost"] == 0 and f["ltv"] is None
    assert "unbounded" in f["reasons"]["ltv"]


def test_months_between_counts_calendar_months() -> None:
    assert domain.months_between(t(2026, 1, 1), t(2026, 4, 1)) == 3
    assert domain.months_between(t(2026, 2, 1), t(2026, 2, 15)) == D(14) / D(28)


# --------------------------------------------------------------------------- tiers

POLICY = domain.TierPolicy()


def test_fire_needs_two_costly_habits_or_one_in_poor_health() -> None:
    tier, reasons = domain.classify_tier(
        domain.TierEvidence(deals_won=1, payments_late=3, payments_on_time=1, complaints=2, band="yellow"), POLICY
    )
    assert tier == "fire" and reasons == ["late payments: 3 of 4", "complaints: 2"]
    one_in_red = domain.TierEvidence(deals_won=2, out_of_scope_requests=3, band="red")
    assert domain.classify_tier(one_in_red, POLICY)[0] == "fire"
    one_in_green = domain.TierEvidence(deals_won=2, out_of_scope_requests=3, band="green")
    assert domain.classify_tier(one_in_green, POLICY) == ("tolerable", ["out-of-scope demands: 3"])


def test_best_good_and_tolerable() -> None:
    best = domain.TierEvidence(deals_won=2, has_subscription=True, revenue=D(12000), payments_on_time=5, band="green")
    assert domain.classify_tier(best, POLICY)[0] == "best"
    assert (
        domain.classify_tier(domain.TierEvidence(deals_won=1, has_subscription=True, band="green"), POLICY)[0] == "good"
    )
    one_off = domain.classify_tier(domain.TierEvidence(deals_won=1, band="green"), POLICY)
    assert one_off == ("tolerable", ["one-off project"])


def test_review_period() -> None:
    assert domain.review_period(t(2026, 5, 31), "monthly") == "2026-05"
    assert domain.review_period(t(2026, 5, 31), "quarterly") == "2026-Q2"


# --------------------------------------------------------------------------- churn risk, loyalty, trend

RISK = domain.RiskPolicy()


def test_churn_risk_rules() -> None:
    now = t(2026, 6, 1)
    assert domain.churn_risks(domain.RiskEvidence(), RISK, now=now) == []
    evidence = domain.RiskEvidence(
        late_payments_recent=2,
        engagement_before=4,
        engagement_recent=1,
        complaints_recent=1,
        hours_used=D(3),
        hours_included=D(10),
        price_increase_at=t(2026, 6, 20),
    )
    assert domain.churn_risks(evidence, RISK, now=now) == list(domain.CHURN_RISK_RULES)
    far = domain.RiskEvidence(price_increase_at=t(2026, 8, 1), engagement_before=4, engagement_recent=2)
    assert domain.churn_risks(far, RISK, now=now) == []  # 2 of 4 is not below half; increase too far


def test_loyalty_points_round_down() -> None:
    assert domain.loyalty_points(D("1999.99"), D("0.1")) == 199
    assert domain.loyalty_points(D("5"), D("0.1")) == 0


def test_trend() -> None:
    assert domain.trend(70, 80) == {"direction": "down", "delta": -10, "since_score": 80}
    assert domain.trend(82, 80)["direction"] == "flat"
    assert domain.trend(None, None)["direction"] == "unknown"

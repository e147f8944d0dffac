"""The agency's figures beyond unit economics (services/retention/domain/figures.py and
rates.py), each against a case computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.retention.domain import figures as f
from services.retention.domain import rates as r
from services.retention.domain.economics import LeadFacts, Movement, Spend


def d(y: int, m: int, day: int = 1) -> datetime:
    return datetime(y, m, day, tzinfo=UTC)


def joined(lead: str, at: datetime, fee: str = "1000") -> Movement:
    return Movement(lead, at, "new", Decimal(fee), "EUR", logo=1)


def left(lead: str, at: datetime, fee: str = "1000", kind: str = "churn") -> Movement:
    return Movement(lead, at, kind, Decimal(fee), "EUR", logo=-1)


def paid(lead: str, at: datetime, amount: str) -> f.Money:
    return f.Money(lead, at, Decimal(amount), "EUR")


def test_roi_and_lead_cost_per_channel() -> None:
    # January: ads spent 3000 and brought 6 leads, 3 qualified, 2 clients (a, b); seo spent nothing.
    leads = [
        LeadFacts("a", "ads", d(2026, 1, 3), qualified_at=d(2026, 1, 5), client_at=d(2026, 1, 10)),
        LeadFacts("b", "ads", d(2026, 1, 4), qualified_at=d(2026, 1, 6), client_at=d(2026, 1, 20)),
        LeadFacts("c", "ads", d(2026, 1, 4), qualified_at=d(2026, 1, 6)),
        *(LeadFacts(f"x{i}", "ads", d(2026, 1, 7)) for i in range(3)),
        LeadFacts("s", "seo", d(2026, 1, 8), client_at=d(2026, 1, 15)),
    ]
    payments = [
        paid("a", d(2026, 1, 10), "1500"),  # within a's first year
        paid("a", d(2026, 6, 1), "1500"),
        paid("b", d(2026, 2, 1), "1000"),
        paid("a", d(2027, 1, 11), "9999"),  # a year and a day after a joined: not first-year
        paid("s", d(2026, 2, 1), "800"),
    ]
    data = f.FiguresInput(
        start=d(2026, 1, 1),
        end=d(2027, 6, 1),
        currency="EUR",
        leads=leads,
        movements=[],
        spends=[Spend("ads", date(2026, 1, 1), date(2026, 1, 31), Decimal(3000), "EUR")],
        payments=payments,
        invoices=[],
        signals=[],
        with_hours=frozenset(),
        retainer_clients=frozenset(),
    )
    ads = f.channel_returns(data)["ads"]
    # first-year revenue 1500 + 1500 + 1000 = 4000; ROI (4000 - 3000) / 3000 = 0.3333
    assert ads["first_year_revenue"] == Decimal("4000.00")
    assert ads["roi"] == Decimal("0.3333")
    assert (ads["cost_per_lead"], ads["cost_per_qualified_lead"]) == (Decimal("500.00"), Decimal("1000.00"))
    seo = f.channel_returns(data)["seo"]
    assert seo["roi"] is None and seo["cost_per_lead"] is None  # no spend: no ROI, no lead cost
    overall = f.totals(f.channel_returns(data))
    # 4800 of revenue over 3000 of spend: (4800 - 3000) / 3000 = 0.6
    assert overall["roi"] == Decimal("0.6000")


def test_a_retention_year_is_this_years_revenue_of_last_years_clients_over_theirs_before() -> None:
    at = d(2027, 1, 1)
    since = {"old": d(2024, 6, 1), "older": d(2024, 1, 1), "young": d(2026, 6, 1)}
    payments = [
        paid("old", d(2025, 7, 1), "5000"),  # the year before: 5000 + 5000
        paid("older", d(2025, 3, 1), "5000"),
        paid("old", d(2026, 3, 1), "7000"),  # this year: 7000 + 6000
        paid("older", d(2026, 11, 1), "6000"),
        paid("young", d(2026, 7, 1), "9000"),  # not a client a year ago: left out
    ]
    figure = f.yearly_revenue_retention(payments, since, at=at, currency="EUR")
    # Had only "old" stayed: 7000 this year over 5000 the year before.
    kept = f.yearly_revenue_retention(payments, since, at=at, currency="EUR", staying=frozenset({"old"}))
    assert (kept["stayed_ratio"], kept["stayed_clients"]) == (Decimal("1.4000"), 1)
    assert figure == {
        "ratio": Decimal("1.3000"),
        "clients": 2,
        "revenue_this_year": Decimal("13000.00"),
        "revenue_year_before": Decimal("10000.00"),
    }


def test_lifetime_median_and_distribution_count_only_those_who_left() -> None:
    movements = [
        joined("a", d(2026, 1, 1)),
        left("a", d(2026, 5, 1)),  # 4 months
        joined("b", d(2026, 1, 1)),
        left("b", d(2026, 7, 1), kind="terminated"),  # 6 months (a termination ends a lifetime too)
        joined("c", d(2026, 2, 1)),
        left("c", d(2026, 3, 1)),  # 1 month
        joined("d", d(2026, 1, 1)),  # still running at the end: 11 months so far
    ]
    spans = f.lifetimes(f._by_client(movements), end=d(2026, 12, 1))
    assert spans["a"] == (Decimal("4.00"), True) and spans["d"] == (Decimal("11.00"), False)
    life = f.lifetime_figures(spans)
    # Product-limit: at 1 month 1 of 4 leaves (3/4 stay), at 4 months 1 of 3 (3/4 x 2/3 = 1/2): 4.
    assert life["median_lifetime_months"] == Decimal("4.00")
    assert life["median_of_those_who_left"] == Decimal("4.00")
    assert [b["clients"] for b in life["lifetime_distribution"]] == [1, 1, 1, 0, 0]  # 0-3, 3-6, 6-12 ...
    assert (life["clients_left"], life["clients_running"]) == (3, 1)


def test_the_leak_counts_clients_who_left_unhappy_within_60_days() -> None:
    by_client = f._by_client(
        [
            *(joined(x, d(2025, 12, 1)) for x in "abcdefghij"),  # ten clients at the start
            left("a", d(2026, 3, 1)),  # complained 30 days before: unhappy
            left("b", d(2026, 3, 1)),  # feedback 4 fifty days before: unhappy
            left("c", d(2026, 3, 1)),  # feedback 9: not unhappy
            left("d", d(2026, 3, 1)),  # complained 90 days before: too long ago
            left("e", d(2026, 3, 1), kind="terminated"),  # let go by the agency: not a leak
        ]
    )
    signals = [
        f.Signal("a", d(2026, 1, 30), "complaint"),
        f.Signal("b", d(2026, 1, 10), "feedback", score=4),
        f.Signal("c", d(2026, 2, 20), "feedback", score=9),
        f.Signal("d", d(2025, 12, 1), "complaint"),
        f.Signal("e", d(2026, 2, 20), "poor_results"),
    ]
    leak = f.leak(by_client, signals, start=d(2026, 1, 1), end=d(2026, 4, 1))
    # 2 unhappy of 10 clients at the start: 0.2, over the 5% goal.
    assert (leak["unhappy"], leak["left"], leak["clients"], leak["share"]) == (2, 4, 10, Decimal("0.2000"))
    assert leak["goal"] == Decimal("0.05") and leak["goal_met"] is False


def test_included_hours_clients_against_those_without() -> None:
    spans = {"h1": (Decimal(10), True), "h2": (Decimal(8), False), "n1": (Decimal(4), True), "n2": (Decimal(6), True)}
    payments = [
        paid("h1", d(2026, 1, 1), "10000"),
        paid("h2", d(2026, 1, 1), "8000"),
        paid("n1", d(2026, 1, 1), "3000"),
    ]
    out = f.included_hours_comparison(
        spans,
        payments,
        with_hours=frozenset({"h1", "h2"}),
        retainers=frozenset({"h1", "h2", "n1", "n2"}),
        currency="EUR",
        end=d(2027, 1, 1),
    )
    assert out["with_hours"] == {
        "clients": 2,
        "median_lifetime_months": Decimal(10),  # 1 of 2 left at 10 months: half stay
        "average_lifetime_months": Decimal("9.00"),
        "average_revenue": Decimal("9000.00"),
    }
    # Without: left at 4 and 6 months (1/2 stay after 4): median 4, average 5.
    assert out["without_hours"]["median_lifetime_months"] == Decimal(4)
    assert out["without_hours"]["average_revenue"] == Decimal("1500.00")
    assert (out["months_longer"], out["measured_by"]) == (Decimal(6), "median_lifetime_months")


def test_new_clients_against_old_ones_per_month() -> None:
    movements = [joined("new", d(2026, 5, 1)), joined("old", d(2025, 1, 1))]
    data = f.FiguresInput(
        start=d(2026, 6, 1),
        end=d(2026, 7, 1),
        currency="EUR",
        leads=[],
        movements=movements,
        spends=[],
        payments=[paid("new", d(2026, 6, 5), "500"), paid("old", d(2026, 6, 5), "2000")],
        invoices=[
            paid("new", d(2026, 6, 1), "400"),
            paid("new", d(2026, 6, 2), "600"),
            paid("old", d(2026, 6, 1), "2000"),
        ],
        signals=[],
        with_hours=frozenset(),
        retainer_clients=frozenset(),
    )
    (june,) = f.new_against_old(data, {"new": d(2026, 5, 1), "old": d(2025, 1, 1)})
    assert june["month"] == "2026-06"
    assert june["new"] == {
        "invoices": 2,
        "average_invoice": Decimal("500.00"),
        "paying_clients": 1,
        "revenue_per_client": Decimal("500.00"),
    }
    assert june["old"]["average_invoice"] == Decimal("2000.00")


def test_under_used_months_run_and_reset() -> None:
    months = 0
    for used in ("4", "3"):  # under half of 10, twice
        months = f.underused_months(months, used=Decimal(used), included=Decimal(10), share=Decimal("0.5"))
    assert months == f.NUDGE_AFTER_MONTHS
    assert (
        f.underused_months(months, used=Decimal(5), included=Decimal(10), share=Decimal("0.5")) == 0
    )  # half is enough
    assert f.underused_months(3, used=Decimal(0), included=None, share=Decimal("0.5")) == 0


def test_rates_convert_at_each_amounts_date_and_name_what_is_missing() -> None:
    rates = [
        r.Rate("USD", "EUR", d(2026, 1, 1), Decimal("0.90")),
        r.Rate("USD", "EUR", d(2026, 7, 1), Decimal("0.95")),
        r.Rate("EUR", "GBP", d(2026, 1, 1), Decimal("0.80")),
    ]
    into = r.Converter("EUR", rates)
    assert into.convert(Decimal(100), "USD", d(2026, 3, 1)) == Decimal("90.00")
    assert into.convert(Decimal(100), "USD", d(2026, 8, 1)) == Decimal("95.00")
    assert into.convert(Decimal(80), "GBP", d(2026, 3, 1)) == Decimal("100.00")  # through the inverse pair
    assert into.convert(Decimal(100), "EUR", d(2020, 1, 1)) == Decimal(100)
    assert into.reason() is None
    assert into.convert(Decimal(100), "USD", d(2025, 12, 31)) is None  # before the first USD rate
    assert into.convert(Decimal(100), "JPY", d(2026, 3, 1)) is None
    assert into.reason() == (
        "no exchange rate for JPY->EUR on 2026-03-01, USD->EUR on 2025-12-31 (and later): 2 amounts left out;"
        " set them with PUT /exchange-rates"
    )
    for bad, field in (
        (r.Rate("EUR", "EUR", d(2026, 1, 1), Decimal(1)), "quote"),
        (r.Rate("USD", "EUR", d(2026, 1, 1), Decimal(0)), "rate"),
    ):
        with pytest.raises(ValueError, match=f"^{field}:"):
            r.check_rate(bad)


def test_the_median_lifetime_counts_clients_still_running_as_staying() -> None:
    # Two left early (1 and 2 months), four still running at 3, 8, 9 and 10 months.
    spans = [(Decimal(1), True), (Decimal(2), True), *((Decimal(m), False) for m in (3, 8, 9, 10))]
    # Plain median of those who left: 1.5 months. Product-limit: 5/6 x 4/5 = 2/3 still staying
    # after 2 months; nobody else left: the median is not reached yet.
    assert f.median_survival(spans) is None
    spans.append((Decimal(12), True))  # one more leaves at 12 of the 1 at risk then... of 1: all gone
    assert f.median_survival(spans) == Decimal(12)
    # Censored at the same moment as a departure: still at risk then (the departure counts first).
    assert f.median_survival([(Decimal(2), True), (Decimal(2), False)]) == Decimal(2)


def test_a_client_who_joined_during_the_year_before_is_annualised() -> None:
    at = d(2027, 1, 1)  # a year ago: 2026-01-01; the year before that from 2025-01-01 (730 days)
    since = {"half": d(2025, 7, 2), "late": d(2025, 12, 20)}  # 183 days of it; 12 days: too few
    payments = [
        paid("half", d(2025, 8, 1), "3000"),  # 3000 in 183 days: 3000 x 365/183 = 5983.61 a year
        paid("half", d(2026, 5, 1), "6000"),
        paid("late", d(2025, 12, 21), "900"),
        paid("late", d(2026, 5, 1), "9000"),
    ]
    figure = f.yearly_revenue_retention(payments, since, at=at, currency="EUR")
    assert (figure["clients"], figure["revenue_this_year"], figure["revenue_year_before"]) == (
        1,
        Decimal("6000.00"),
        Decimal("5983.61"),
    )
    assert figure["ratio"] == Decimal("1.0027")

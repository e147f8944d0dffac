"""Billing's pure rules: no database, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.billing import domain
from shared.errors import Conflict, Invalid

D = Decimal
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)


# --------------------------------------------------------------------------- deposits


def test_project_deposit_is_a_share_of_the_total() -> None:
    assert domain.deposit_amount(kind="project", total=D("3000"), monthly_fee=None, deposit_share=D("0.30")) == D(
        "900.00"
    )


def test_retainer_deposit_is_a_share_of_the_first_month_not_the_total() -> None:
    amount = domain.deposit_amount(kind="retainer", total=D("5000"), monthly_fee=D("1200"), deposit_share=D("0.5"))
    assert amount == D("600.00")


@pytest.mark.parametrize(
    ("total", "share", "expected"),
    [
        (D("100.05"), D("0.5"), D("50.02")),  # 50.025: half to even goes down
        (D("100.15"), D("0.5"), D("50.08")),  # 50.075: half to even goes up
        (D("333.33"), D("0.33"), D("110.00")),  # 109.9989
        (D("0.01"), D("0.10"), D("0.00")),
    ],
)
def test_deposit_rounds_to_cents_with_bankers_rounding(total: Decimal, share: Decimal, expected: Decimal) -> None:
    amount = domain.deposit_amount(kind="project", total=total, monthly_fee=None, deposit_share=share)
    assert amount == expected and amount.as_tuple().exponent == -2


def test_zero_share_asks_no_deposit() -> None:
    assert domain.deposit_amount(kind="project", total=D("8000"), monthly_fee=None, deposit_share=D(0)) == D("0.00")


@pytest.mark.parametrize(
    ("kind", "monthly_fee", "share", "message"),
    [
        ("project", None, D("1.2"), "between 0 and 1"),
        ("project", None, D("-0.1"), "between 0 and 1"),
        ("retainer", None, D("0.3"), "monthly_fee"),
        ("barter", None, D("0.3"), "unknown deal kind"),
    ],
)
def test_deposit_refuses_impossible_deals(kind: str, monthly_fee: Decimal | None, share: Decimal, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        domain.deposit_amount(kind=kind, total=D("1000"), monthly_fee=monthly_fee, deposit_share=share)


def test_deposit_line_says_what_it_is_a_share_of() -> None:
    assert (
        domain.deposit_line(kind="project", title="Site", deposit_share=D("0.30"))
        == "Deposit: 30% of the estimate (Site)"
    )
    assert (
        domain.deposit_line(kind="retainer", title="SEO", deposit_share=D("0.5"))
        == "Deposit: 50% of the first month (SEO)"
    )
    assert domain.percent(D("0.125")) == "12.5"


# --------------------------------------------------------------------------- invoice numbers


def test_invoice_numbers_are_year_and_six_digit_sequence() -> None:
    assert domain.invoice_number(2026, 1) == "2026-000001"
    assert domain.invoice_number(2026, 42) == "2026-000042"
    assert domain.invoice_number(2027, 123456) == "2027-123456"
    with pytest.raises(ValueError):
        domain.invoice_number(2026, 0)


def test_invoice_sequence_has_no_gaps_and_restarts_each_year() -> None:
    last = 0
    numbers = []
    for _ in range(5):
        last = domain.next_sequence(last)
        numbers.append(domain.invoice_number(2026, last))
    assert numbers == [f"2026-00000{i}" for i in range(1, 6)]
    assert domain.invoice_number(2027, domain.next_sequence(0)) == "2027-000001"
    # Sorting the text sorts the numbers: the zero padding keeps them in order.
    assert sorted(["2026-000010", "2026-000009"]) == ["2026-000009", "2026-000010"]


def test_due_date() -> None:
    assert domain.due_date(NOW, days=7) == NOW + timedelta(days=7)


# --------------------------------------------------------------------------- payments


def pay(amount: str, *, already: str = "0", status: str = "open", invoice: str = "900.00", currency: str = "EUR"):
    return domain.apply_payment(
        invoice_amount=D(invoice),
        invoice_currency="EUR",
        already_paid=D(already),
        status=status,
        amount=D(amount),
        currency=currency,
    )


def test_partial_payment_leaves_the_invoice_open() -> None:
    result = pay("400.00")
    assert (result.applied, result.credited, result.amount_paid, result.amount_due) == (
        D("400.00"),
        0,
        D("400.00"),
        D("500.00"),
    )
    assert result.status == "open" and not result.settles


def test_partial_payments_add_up_and_the_last_one_settles() -> None:
    result = pay("500.00", already="400.00")
    assert result.status == "paid" and result.settles and result.amount_due == 0 and result.credited == 0


def test_overpayment_credits_the_surplus() -> None:
    result = pay("1000.00", already="400.00")
    assert result.applied == D("500.00") and result.credited == D("500.00")
    assert result.amount_paid == D("900.00") and result.settles


def test_paying_a_paid_invoice_is_all_credit_and_settles_nothing_again() -> None:
    result = pay("50.00", already="900.00", status="paid")
    assert result.applied == 0 and result.credited == D("50.00") and not result.settles and result.status == "paid"


def test_bad_payments_are_refused() -> None:
    with pytest.raises(Conflict, match="void"):
        pay("10", status="void")
    with pytest.raises(Invalid, match="currency USD differs"):
        pay("10", currency="USD")
    for amount in ("0", "-5"):
        with pytest.raises(Invalid, match="greater than zero"):
            pay(amount)
    with pytest.raises(Invalid, match="two decimal"):
        pay("10.001")


def test_days_late_counts_whole_days_after_due() -> None:
    due = NOW
    assert domain.days_late(due_at=due, paid_at=due - timedelta(days=3)) == 0
    assert domain.days_late(due_at=due, paid_at=due + timedelta(hours=23)) == 0
    assert domain.days_late(due_at=due, paid_at=due + timedelta(days=4, hours=1)) == 4


def test_only_open_unpaid_invoices_may_be_voided() -> None:
    domain.void_check(status="open", amount_paid=D(0))
    with pytest.raises(Conflict, match="paid invoice"):
        domain.void_check(status="paid", amount_paid=D(10))
    with pytest.raises(Conflict, match="partly paid"):
        domain.void_check(status="open", amount_paid=D(10))


def test_invoice_status() -> None:
    assert domain.invoice_status(amount=D(0), amount_paid=D(0), voided=False) == "paid"
    assert domain.invoice_status(amount=D(10), amount_paid=D(5), voided=False) == "open"
    assert domain.invoice_status(amount=D(10), amount_paid=D(0), voided=True) == "void"


# --------------------------------------------------------------------------- subscriptions


def test_subscription_lifecycle() -> None:
    status = domain.transition("pending", "activate")
    assert status == "active"
    status = domain.transition(status, "pause")
    assert status == "paused"
    assert domain.transition(status, "resume") == "active"
    assert domain.transition(status, "cancel") == "cancelled"
    with pytest.raises(Conflict):
        domain.transition("pending", "pause")
    with pytest.raises(Conflict):
        domain.transition("cancelled", "activate")


def test_add_months_clamps_to_the_end_of_the_month() -> None:
    assert domain.add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert domain.add_months(datetime(2028, 1, 31, tzinfo=UTC), 1) == datetime(2028, 2, 29, tzinfo=UTC)
    assert domain.add_months(datetime(2026, 11, 15, 8, tzinfo=UTC), 3) == datetime(2027, 2, 15, 8, tzinfo=UTC)
    assert domain.add_months(NOW, 12) == NOW.replace(year=2027)


# --------------------------------------------------------------------------- offers that bill


def test_a_discount_offer_starts_next_period_and_runs_its_months() -> None:
    terms = domain.price_offer(
        kind="discount",
        monthly_fee=Decimal(1000),
        fee=None,
        percent=Decimal(20),
        months=2,
        included_hours=None,
        next_period=datetime(2031, 4, 1, tzinfo=UTC),
    )
    assert (terms.fee, terms.percent, terms.starts, terms.ends) == (
        Decimal("800.00"),
        Decimal(20),
        datetime(2031, 4, 1, tzinfo=UTC),
        datetime(2031, 6, 1, tzinfo=UTC),
    )
    inside = [
        domain.offer_applies(starts=terms.starts, ends=terms.ends, period_start=datetime(2031, m, 1, tzinfo=UTC))
        for m in (3, 4, 5, 6)
    ]
    assert inside == [False, True, True, False]
    assert domain.offer_over(ends=terms.ends, period_start=datetime(2031, 6, 1, tzinfo=UTC))


def test_offer_terms_are_refused_by_field() -> None:
    def terms(**kw: object) -> domain.PriceOffer:
        base: dict[str, object] = {
            "kind": "discount",
            "monthly_fee": Decimal(1000),
            "fee": None,
            "percent": Decimal(20),
            "months": 2,
            "included_hours": None,
            "next_period": datetime(2031, 4, 1, tzinfo=UTC),
        }
        return domain.price_offer(**{**base, **kw})  # type: ignore[arg-type]

    for kw, field in (
        ({"percent": Decimal(150)}, "offer.discount_percent"),
        ({"months": 0}, "offer.months"),
        ({"months": None}, "offer.months"),
        ({"kind": "downgrade", "percent": None}, "offer.fee"),
        ({"fee": Decimal(1200)}, "offer.fee"),
        ({"kind": "pause"}, "offer.kind"),
    ):
        with pytest.raises(Invalid, match=field):
            terms(**kw)


def test_a_discounted_period_shows_the_discount_as_its_own_line_and_prorates_it() -> None:
    april = (datetime(2031, 4, 1, tzinfo=UTC), datetime(2031, 5, 1, tzinfo=UTC))
    fee, lines = domain.offer_lines(
        kind="discount",
        monthly_fee=Decimal(1000),
        fee=Decimal(800),
        percent=Decimal(20),
        included_hours=None,
        period=april,
        calendar_aligned=True,
    )
    assert fee == Decimal(800)
    assert lines == [
        ("Retainer, 01 Apr 2031 - 30 Apr 2031", Decimal(1000)),
        ("Save offer: 20% off, 01 Apr 2031 - 30 Apr 2031", Decimal(-200)),
    ]
    half = (datetime(2031, 4, 16, tzinfo=UTC), datetime(2031, 5, 1, tzinfo=UTC))
    _, partial = domain.offer_lines(
        kind="discount",
        monthly_fee=Decimal(1000),
        fee=Decimal(800),
        percent=Decimal(20),
        included_hours=None,
        period=half,
        calendar_aligned=True,
    )
    assert [amount for _, amount in partial] == [Decimal("500.00"), Decimal("-100.00")]  # 15 of 30 days
    _, plan = domain.offer_lines(
        kind="downgrade",
        monthly_fee=Decimal(1000),
        fee=Decimal(600),
        percent=None,
        included_hours=Decimal(5),
        period=april,
        calendar_aligned=True,
    )
    assert plan == [("Retainer, downgraded plan, 5 hours included, 01 Apr 2031 - 30 Apr 2031", Decimal(600))]


def test_resuming_mid_period_owes_the_rest_at_the_full_fee_less_the_pause_fee() -> None:
    april = (datetime(2031, 4, 1, tzinfo=UTC), datetime(2031, 5, 1, tzinfo=UTC))
    owed = domain.resume_catch_up(
        monthly_fee=Decimal(900),
        paused_fee=Decimal(60),
        period=april,
        at=datetime(2031, 4, 21, tzinfo=UTC),
        calendar_aligned=True,
    )
    assert owed == Decimal("280.00")  # (900 - 60) x 10/30
    assert domain.resume_catch_up(
        monthly_fee=Decimal(900),
        paused_fee=Decimal(60),
        period=april,
        at=datetime(2031, 5, 1, tzinfo=UTC),
        calendar_aligned=True,
    ) == Decimal(0)

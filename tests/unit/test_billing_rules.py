"""Billing's pure rules: proration, periods, overage, pause, price changes, dunning ladder,
retry schedule, webhook signatures, credit notes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from services.billing import domain
from shared.errors import Invalid

T = datetime(2026, 1, 15, 12, tzinfo=UTC)
LADDER = domain.Ladder()


def test_calendar_periods_end_on_the_first_and_anchored_ones_do_not_drift() -> None:
    assert domain.period_after(T, anchor=T, calendar_aligned=True) == datetime(2026, 2, 1, tzinfo=UTC)
    anchor = datetime(2026, 1, 31, tzinfo=UTC)
    ends = []
    start = anchor
    for _ in range(3):
        start = domain.period_after(start, anchor=anchor, calendar_aligned=False)
        ends.append(start.date().isoformat())
    assert ends == ["2026-02-28", "2026-03-31", "2026-04-30"]


def test_proration_by_the_second_rounded_to_cents() -> None:
    month = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert domain.prorate(D("1000"), period=month, used=(T, month[1])) == D("532.26")  # 16.5 / 31
    assert domain.prorate(D("900"), period=month, used=month) == D("900.00")
    assert domain.prorate(D("900"), period=month, used=(month[1], month[1] + timedelta(days=3))) == D("0.00")
    assert domain.full_month((T, month[1]), calendar_aligned=True) == month
    with pytest.raises(ValueError):
        domain.prorate(D(1), period=(month[1], month[0]), used=month)


def test_overage_and_utilisation() -> None:
    assert domain.overage(used=D(12), included=D(10), rate=D(120)) == (D(2), D("240.00"))
    assert domain.overage(used=D(4), included=D(10), rate=D(120)) == (D(0), D("0.00"))
    assert domain.overage(used=D("1.5"), included=None, rate=None) == (D("1.5"), D("0.00"))
    assert domain.utilisation(used=D(4), included=D(10)) == D("0.4")
    assert domain.utilisation(used=D(4), included=None) is None


def test_pause_rules_low_fee_not_in_mrr_and_ends_at_a_period() -> None:
    assert domain.billed_fee(status="paused", monthly_fee=D(900), paused_fee=D(49)) == D(49)
    assert domain.billed_fee(status="active", monthly_fee=D(900), paused_fee=D(49)) == D(900)
    assert not domain.in_mrr("paused") and domain.in_mrr("active") and not domain.in_mrr("cancelled")
    assert domain.pause_ends(paused_until=T, period_start=T)
    assert not domain.pause_ends(paused_until=T + timedelta(days=1), period_start=T)
    assert not domain.pause_ends(paused_until=None, period_start=T)
    assert domain.transition("paused", "resume") == "active"


def test_price_changes() -> None:
    assert domain.new_price(old=D(1000), percent_change=D(10), price=None) == D("1100.00")
    assert domain.new_price(old=D(1000), percent_change=None, price=D("950")) == D("950.00")
    for bad in (
        {"percent_change": None, "price": None},
        {"percent_change": D(1), "price": D(1)},
        {"percent_change": D(-100), "price": None},
    ):
        with pytest.raises(Invalid):
            domain.new_price(old=D(1), **bad)
    effective = T + timedelta(days=60)
    assert domain.notice_dates(effective_at=effective, now=T, days_before=[30, 7]) == [
        effective - timedelta(days=30),
        effective - timedelta(days=7),
    ]
    assert domain.notice_dates(effective_at=T + timedelta(days=3), now=T, days_before=[30, 7]) == [T]
    with pytest.raises(Invalid, match="past"):
        domain.notice_dates(effective_at=T, now=T, days_before=[30])
    assert (
        domain.mrr_movement(old=D(1), new=D(2)) == "expansion"
        and domain.mrr_movement(old=D(2), new=D(1)) == "contraction"
    )


def test_retry_schedule_and_declines() -> None:
    got = [domain.next_retry_at(first_failed_at=T, retries_done=n, ladder=LADDER) for n in range(5)]
    assert got == [T + timedelta(days=d) for d in (1, 3, 5, 7)] + [None]
    kinds = {
        c: domain.classify_decline(c, hard_codes=frozenset({"stolen_card"}), grace_codes=frozenset({"expired_card"}))
        for c in ("stolen_card", "expired_card", "insufficient_funds", None)
    }
    assert kinds == {"stolen_card": "hard", "expired_card": "grace", "insufficient_funds": "soft", None: "soft"}


@pytest.mark.parametrize(
    ("days", "tier", "expected"),
    [
        (0, None, None),
        (1, None, "overdue"),
        (9, None, "overdue"),
        (10, None, "warning"),
        (14, None, "blocked"),
        (21, None, "cancelled"),
        (10, "best", "overdue"),
        (17, "best", "warning"),
        (21, "best", "blocked"),
        (28, "best", "cancelled"),
    ],
)
def test_overdue_ladder(days: int, tier: str | None, expected: str | None) -> None:
    due = T
    state = domain.dunning_state(
        now=due + timedelta(days=days, minutes=1),
        due_at=due,
        grace_until=None,
        retrying=False,
        tier=tier,
        ladder=LADDER,
    )
    assert state == expected


def test_grace_keeps_service_and_the_ladder_counts_from_its_end() -> None:
    grace = T + timedelta(days=14)
    kw = {"due_at": T, "grace_until": grace, "retrying": False, "tier": None, "ladder": LADDER}
    assert domain.dunning_state(now=T + timedelta(days=13), **kw) == "grace"
    assert domain.dunning_state(now=grace + timedelta(days=2), **kw) == "overdue"
    assert domain.dunning_state(now=grace + timedelta(days=10, minutes=1), **kw) == "warning"
    assert (
        domain.dunning_state(
            now=T - timedelta(days=1), due_at=T, grace_until=None, retrying=True, tier=None, ladder=LADDER
        )
        == "retrying"
    )


def test_webhook_signatures() -> None:
    body = b'{"id":"evt_1"}'
    header = domain.sign(body=body, secret="s3cret", timestamp=int(T.timestamp()))
    assert domain.verify_signature(header=header, body=body, secret="s3cret", now=T, tolerance_s=300) == int(
        T.timestamp()
    )
    for bad_header, bad_body, now, message in [
        (header, body + b" ", T, "bad signature"),
        (header.replace("v1=", "v1=0"), body, T, "bad signature"),
        (header, body, T + timedelta(seconds=301), "tolerance"),
        (None, body, T, "missing"),
        ("v1=abc", body, T, "t=<unix"),
    ]:
        with pytest.raises(domain.BadSignature, match=message):
            domain.verify_signature(header=bad_header, body=bad_body, secret="s3cret", now=now, tolerance_s=300)
    with pytest.raises(domain.BadSignature):
        domain.verify_signature(header=header, body=body, secret="other", now=T, tolerance_s=300)


def test_credit_notes_lower_the_due_part_first_then_refund_or_credit() -> None:
    open_part = domain.split_credit(
        amount=D(100), invoice_amount=D(1000), paid=D(950), credited_before=D(0), refund=True
    )
    assert open_part == domain.CreditSplit(reduces_due=D(50), refunded=D(50), credited=D(0))
    kept = domain.split_credit(amount=D(100), invoice_amount=D(1000), paid=D(1000), credited_before=D(0), refund=False)
    assert kept == domain.CreditSplit(reduces_due=D(0), refunded=D(0), credited=D(100))
    for amount, message in (
        (D(0), "greater than zero"),
        (D("-1"), "greater than zero"),
        (D("0.001"), "two decimal"),
        (D(901), "more than"),
    ):
        with pytest.raises(Invalid, match=message):
            domain.split_credit(amount=amount, invoice_amount=D(1000), paid=D(0), credited_before=D(100), refund=False)
    assert domain.amount_open(D(1000), D(300), D(100)) == D(600)


def test_milestones_never_exceed_what_remains() -> None:
    assert domain.remaining_to_invoice(total=D(3000), invoiced=D(1900)) == D("1100.00")
    domain.milestone_check(amount=D(1100), remaining=D(1100))
    with pytest.raises(Invalid, match="remains"):
        domain.milestone_check(amount=D("1100.01"), remaining=D(1100))

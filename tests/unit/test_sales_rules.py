"""The sales department's rules by hand-computed cases: business hours for speed to lead,
who gets a new lead, and what a commission plan pays."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.leads.domain.assignment import (
    AssignmentRule,
    AssignmentRules,
    LeadFacts,
    Rep,
    RuleMatch,
    choose,
    may_own,
    rule_problems,
)
from services.leads.domain.commission import CommissionPlan, Paid, Quota, attainment, commission
from shared.business_hours import BusinessHours
from shared.zones import zone

LONDON, DHAKA = ZoneInfo("Europe/London"), ZoneInfo("Asia/Dhaka")
HOURS = BusinessHours()  # 9 to 17, Monday to Friday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Business hours ------------------------------------------------------------------------------


def test_a_deadline_inside_one_working_day() -> None:
    # Tuesday 2026-12-08 10:00 London (= UTC in winter) + 4 h -> 14:00.
    assert HOURS.add(utc(2026, 12, 8, 10), 4, LONDON) == utc(2026, 12, 8, 14)


def test_a_deadline_carries_over_the_evening_and_the_weekend() -> None:
    # Friday 16:00 + 4 h: 1 h on Friday, 3 h on Monday from 9:00 -> Monday 12:00.
    assert HOURS.add(utc(2026, 12, 11, 16), 4, LONDON) == utc(2026, 12, 14, 12)
    # Saturday at noon: nothing counts until Monday 9:00.
    assert HOURS.add(utc(2026, 12, 12, 12), 1, LONDON) == utc(2026, 12, 14, 10)


def test_a_deadline_in_the_leads_own_zone() -> None:
    # 03:00 UTC is 09:00 in Dhaka (UTC+6): a Dhaka lead's four hours end at 13:00 Dhaka = 07:00 UTC,
    # while a London lead captured then waits for 9:00 London.
    assert HOURS.add(utc(2026, 12, 8, 3), 4, DHAKA) == utc(2026, 12, 8, 7)
    assert HOURS.add(utc(2026, 12, 8, 3), 4, LONDON) == utc(2026, 12, 8, 13)


def test_days_off_and_another_working_week() -> None:
    sunday_to_thursday = BusinessHours(days=(6, 0, 1, 2, 3), holidays=frozenset({date(2026, 12, 16)}))
    # Thursday 2026-12-10 16:00 Dhaka + 2 h: 1 h Thursday, Friday and Saturday off, 1 h Sunday.
    assert sunday_to_thursday.add(datetime(2026, 12, 10, 16, tzinfo=DHAKA), 2, DHAKA) == datetime(
        2026, 12, 13, 10, tzinfo=DHAKA
    )
    # Wednesday 2026-12-16 is a holiday: Tuesday 16:30 + 1 h ends on Thursday at 9:30.
    assert sunday_to_thursday.add(datetime(2026, 12, 15, 16, 30, tzinfo=DHAKA), 1, DHAKA) == datetime(
        2026, 12, 17, 9, 30, tzinfo=DHAKA
    )


def test_working_time_between_two_moments() -> None:
    # Friday 15:00 to Monday 10:30 London: 2 h + 1.5 h.
    assert HOURS.between(utc(2026, 12, 11, 15), utc(2026, 12, 14, 10, 30), LONDON) == timedelta(hours=3.5)
    assert HOURS.between(utc(2026, 12, 14, 10), utc(2026, 12, 14, 9), LONDON) == timedelta(0)
    # add and between agree.
    start = utc(2026, 12, 9, 16, 45)
    assert HOURS.between(start, HOURS.add(start, 7.25, LONDON), LONDON) == timedelta(hours=7.25)


def test_a_calendar_that_cannot_be_is_refused_and_an_odd_zone_falls_back() -> None:
    with pytest.raises(ValueError):
        BusinessHours(start=time(17), end=time(9))
    with pytest.raises(ValueError):
        BusinessHours(days=())
    assert zone("America") == ZoneInfo("UTC")
    assert zone(None) == ZoneInfo("UTC")


# Assignment ------------------------------------------------------------------------------------


def rep(
    name: str,
    *,
    languages: tuple[str, ...] = ("en",),
    capacity: int = 1,
    open_leads: int = 0,
    role: str = "sales",
    active: bool = True,
) -> Rep:
    return Rep(uuid.uuid5(uuid.NAMESPACE_DNS, name), role, active, languages, capacity, open_leads)


ANNA, BASHIR, CYRUS = rep("anna"), rep("bashir", languages=("bn", "en")), rep("cyrus", languages=("fa", "en"))


def test_a_lead_goes_to_someone_who_speaks_its_language() -> None:
    team = [ANNA, BASHIR, CYRUS]
    assert choose(LeadFacts("website", "BD", "bn"), team, AssignmentRules()).person_id == BASHIR.person_id
    assert choose(LeadFacts("website", "IR", "fa"), team, AssignmentRules()).person_id == CYRUS.person_id
    # Everyone speaks English: weighted round-robin among all three.
    assert choose(LeadFacts("website", "GB", "en"), team, AssignmentRules()).person_id in {r.person_id for r in team}


def test_round_robin_is_weighted_by_capacity() -> None:
    big, small = rep("big", capacity=2), rep("small", capacity=1)
    counts = {big.person_id: 0, small.person_id: 0}
    for _ in range(30):
        team = [
            Rep(big.person_id, "sales", True, ("en",), 2, counts[big.person_id]),
            Rep(small.person_id, "sales", True, ("en",), 1, counts[small.person_id]),
        ]
        counts[choose(LeadFacts("ads", None, "en"), team, AssignmentRules()).person_id] += 1
    assert counts == {big.person_id: 20, small.person_id: 10}


def test_the_first_matching_rule_narrows_the_choice() -> None:
    rules = AssignmentRules(
        rules=[
            AssignmentRule(name="tenders", match=RuleMatch(channels=["tender"]), people=[ANNA.person_id]),
            AssignmentRule(name="Iran", match=RuleMatch(countries=["ir"]), people=[CYRUS.person_id]),
        ]
    )
    team = [ANNA, BASHIR, CYRUS]
    assert choose(LeadFacts("tender", "IR", "en"), team, rules).person_id == ANNA.person_id
    assert choose(LeadFacts("website", "IR", "en"), team, rules).person_id == CYRUS.person_id
    # A Bengali tender: language first, and the tender desk does not speak Bengali.
    assert choose(LeadFacts("tender", "BD", "bn"), team, rules).person_id == BASHIR.person_id


def test_nobody_eligible_leaves_the_lead_in_the_pool() -> None:
    team = [rep("gone", active=False), rep("viewer", role="viewer"), rep("full", capacity=0)]
    assert choose(LeadFacts("website", None, "en"), team, AssignmentRules()).person_id is None


def test_a_rule_book_naming_the_wrong_people_is_refused_field_by_field() -> None:
    gone, viewer = rep("gone", active=False), rep("viewer", role="viewer")
    people = {r.person_id: r for r in (ANNA, gone, viewer)}
    stranger = uuid.uuid4()
    rules = AssignmentRules(
        rules=[
            AssignmentRule(name="ok", people=[ANNA.person_id]),
            AssignmentRule(name="nobody", people=[gone.person_id, viewer.person_id, stranger]),
        ]
    )
    problems = dict(rule_problems(rules, people))
    assert "rules[0].people[0]" not in problems
    assert "disabled" in problems["rules[1].people[0]"]
    assert "role viewer" in problems["rules[1].people[1]"]
    assert "no person" in problems["rules[1].people[2]"]
    assert "names nobody" in problems["rules[1]"]
    assert may_own("viewer", True) and may_own("sales", False) and may_own("success", True) is None


# Commission --------------------------------------------------------------------------------------


WON = utc(2026, 1, 10)


def test_commission_by_hand() -> None:
    plan = CommissionPlan(
        currency="EUR", deposit_share=Decimal("0.10"), first_year_share=Decimal("0.05"), monthly_cap=Decimal("500")
    )
    paid = [
        Paid("deposit", Decimal("3000"), "EUR", utc(2026, 1, 12), WON),  # 300.00
        Paid("invoice", Decimal("2000"), "EUR", utc(2026, 2, 1), WON),  # 100.00
        Paid("invoice", Decimal("2000"), "EUR", utc(2026, 3, 1), WON),  # 100.00
        Paid("deposit", Decimal("9000"), "EUR", utc(2026, 3, 20), WON),  # 900.00 -> March 1000, capped 500
        Paid("invoice", Decimal("2000"), "EUR", utc(2027, 1, 10), WON),  # a year after the win: nothing
        Paid("invoice", Decimal("2000"), "USD", utc(2026, 2, 2), WON),  # another currency: not here
        Paid("invoice", Decimal("0.10"), "EUR", utc(2026, 4, 1), WON),  # 0.005 -> 0.00 (half to even)
        Paid("invoice", Decimal("0.30"), "EUR", utc(2026, 5, 1), WON),  # 0.015 -> 0.02
    ]
    months = {m.month: m for m in commission(plan, paid)}
    assert [(k, m.earned, m.paid) for k, m in sorted(months.items())] == [
        ("2026-01", Decimal("300.00"), Decimal("300.00")),
        ("2026-02", Decimal("100.00"), Decimal("100.00")),
        ("2026-03", Decimal("1000.00"), Decimal("500")),
        ("2026-04", Decimal("0.00"), Decimal("0.00")),
        ("2026-05", Decimal("0.02"), Decimal("0.02")),
    ]
    assert "2027-01" not in months
    assert sum(m.paid for m in months.values()) == Decimal("900.02")


def test_a_plan_paying_more_than_everything_and_odd_quotas_are_refused() -> None:
    with pytest.raises(ValidationError, match="exceed 100%"):
        CommissionPlan(currency="EUR", deposit_share=Decimal("0.7"), first_year_share=Decimal("0.4"))
    with pytest.raises(ValidationError, match="deposit_share"):
        CommissionPlan(currency="EUR", deposit_share=Decimal("1.5"), first_year_share=Decimal("0"))
    with pytest.raises(ValidationError, match="no decimals"):
        CommissionPlan(
            currency="JPY", deposit_share=Decimal("0.1"), first_year_share=Decimal("0"), monthly_cap=Decimal("10.5")
        )
    with pytest.raises(ValidationError, match="month"):
        Quota(person_id=uuid.uuid4(), month="2026-13", amount=Decimal("1000"), currency="EUR")
    with pytest.raises(ValidationError, match="currency"):
        Quota(person_id=uuid.uuid4(), month="2026-12", amount=Decimal("1000"), currency="XXQ")
    assert attainment(Decimal("7500"), Decimal("10000")) == Decimal("0.7500")
    assert attainment(Decimal("7500"), None) is None


def test_a_reminder_before_a_deadline_counts_working_time_backwards() -> None:
    # Monday 2026-12-14 11:00 London, 4 h before: Friday 15:00 (2 h Monday, 2 h Friday).
    assert HOURS.subtract(utc(2026, 12, 14, 11), 4, LONDON) == utc(2026, 12, 11, 15)
    deadline = utc(2026, 12, 17, 10, 30)
    assert HOURS.between(HOURS.subtract(deadline, 13.5, LONDON), deadline, LONDON) == timedelta(hours=13.5)

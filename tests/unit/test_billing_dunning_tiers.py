"""Dunning for every tier: each tier's ladder, by hand-computed days, and a ladder whose steps
are out of order refused when the settings are read."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.billing import domain
from services.billing.settings import DunningPolicy

T = datetime(2026, 3, 2, 9, tzinfo=UTC)  # the due date
LADDER = domain.Ladder()


def state(days: float, tier: str | None, **kw: object) -> str | None:
    """The state ``days`` after the due date (a minute past, so whole days have elapsed)."""
    args: dict[str, Any] = {"grace_until": None, "retrying": False, "tier": tier, "ladder": LADDER} | kw
    return domain.dunning_state(now=T + timedelta(days=days, minutes=1), due_at=T, **args)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        # best: good + 7 at every step (17, 21, 28), as before tiers were data.
        (
            "best",
            {1: "overdue", 16: "overdue", 17: "warning", 20: "warning", 21: "blocked", 27: "blocked", 28: "cancelled"},
        ),
        # good: 10, 14, 21 (the flat BILLING_*_DAYS).
        ("good", {0: None, 1: "overdue", 9: "overdue", 10: "warning", 13: "warning", 14: "blocked", 21: "cancelled"}),
        # tolerable: 7, 10, 14.
        (
            "tolerable",
            {1: "overdue", 6: "overdue", 7: "warning", 9: "warning", 10: "blocked", 13: "blocked", 14: "cancelled"},
        ),
        # fire: the final notice from the due date, blocked 7, cancelled 14.
        ("fire", {0: "warning", 1: "warning", 6: "warning", 7: "blocked", 13: "blocked", 14: "cancelled"}),
    ],
)
def test_each_tier_climbs_its_own_ladder(tier: str, expected: dict[int, str | None]) -> None:
    assert {days: state(days, tier) for days in expected} == expected


def test_no_tier_or_an_unknown_one_climbs_good_s_ladder() -> None:
    for tier in (None, "platinum"):
        assert [state(d, tier) for d in (9, 10, 14, 21)] == ["overdue", "warning", "blocked", "cancelled"]
    assert LADDER.for_tier(None) == LADDER.for_tier("good") == LADDER.for_tier("platinum")


def test_fire_goes_straight_to_the_final_notice_on_a_failed_card() -> None:
    before_due = T - timedelta(days=5)
    kw: dict[str, Any] = {"now": before_due, "due_at": T, "grace_until": None, "ladder": LADDER}
    # A soft decline five days before the due date: good retries, fire is at the final notice.
    assert domain.dunning_state(retrying=True, tier="good", **kw) == "retrying"
    assert domain.dunning_state(retrying=True, tier="fire", **kw) == "warning"
    # A hard decline (no retry): good waits for the due date, fire's final notice is at once.
    assert domain.dunning_state(retrying=False, failed=True, tier="good", **kw) is None
    assert domain.dunning_state(retrying=False, failed=True, tier="fire", **kw) == "warning"
    # Nothing failed and nothing late: nothing to chase, whatever the tier.
    assert domain.dunning_state(retrying=False, tier="fire", **kw) is None


def test_fire_gets_no_expired_card_grace_and_the_others_get_theirs() -> None:
    declined = T - timedelta(days=3)
    grace = {t: LADDER.grace_until(declined_at=declined, tier=t) for t in ("best", "good", "tolerable", "fire")}
    assert grace == {
        "best": declined + timedelta(days=21),  # 14 + 7
        "good": declined + timedelta(days=14),
        "tolerable": declined + timedelta(days=7),
        "fire": None,
    }
    # No grace, and an expired card is not retried: the fire client is at the final notice.
    retry = domain.retry_after_decline(
        kind="grace", hard_declined=False, first_failed_at=declined, retries_done=0, ladder=LADDER, tier="fire"
    )
    assert retry is None
    assert (
        domain.dunning_state(
            now=declined, due_at=T, grace_until=grace["fire"], retrying=False, failed=True, tier="fire", ladder=LADDER
        )
        == "warning"
    )
    # good keeps service in grace until Mar 13 (Feb 27 + 14), then counts from there.
    good_grace = grace["good"]
    assert good_grace is not None
    kw: dict[str, Any] = {
        "due_at": T,
        "grace_until": good_grace,
        "retrying": False,
        "failed": True,
        "tier": "good",
        "ladder": LADDER,
    }
    assert domain.dunning_state(now=good_grace - timedelta(minutes=1), **kw) == "grace"
    assert domain.dunning_state(now=good_grace + timedelta(days=10, minutes=1), **kw) == "warning"


def test_retry_schedule_per_tier() -> None:
    ladder = domain.Ladder(tiers={"tolerable": {"retry_schedule_days": (2, 4)}})

    def schedule(tier: str) -> list[datetime | None]:
        return [domain.next_retry_at(first_failed_at=T, retries_done=n, ladder=ladder, tier=tier) for n in range(3)]

    assert schedule("good") == [T + timedelta(days=1), T + timedelta(days=3), T + timedelta(days=5)]
    assert schedule("tolerable") == [T + timedelta(days=2), T + timedelta(days=4), None]


def test_overrides_merge_over_the_defaults_field_by_field() -> None:
    ladder = domain.Ladder(tiers={"fire": {"cancelled_days": 30}, "best": {"extra_days": 3}})
    fire = ladder.for_tier("fire")
    assert (fire.warning_days, fire.blocked_days, fire.cancelled_days, fire.grace_days) == (0, 7, 30, 0)
    assert fire.final_notice_at_once
    best = ladder.for_tier("best")
    assert (best.warning_days, best.blocked_days, best.cancelled_days, best.grace_days) == (13, 17, 24, 17)
    assert ladder.for_tier("tolerable") == LADDER.for_tier("tolerable")


def test_tiers_come_from_the_environment_as_json_and_the_flat_names_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_DUNNING_TIERS", '{"tolerable": {"warning_days": 5, "retry_schedule_days": [2, 6]}}')
    monkeypatch.setenv("BILLING_WARNING_DAYS", "9")
    monkeypatch.setenv("BILLING_BEST_EXTRA_DAYS", "5")
    policy = DunningPolicy()
    tolerable = policy.for_tier("tolerable")
    assert (tolerable.warning_days, tolerable.blocked_days, tolerable.retry_schedule_days) == (5, 10, (2, 6))
    assert policy.for_tier("good").warning_days == 9
    assert policy.for_tier("best").warning_days == 14  # 9 + 5
    assert policy.for_tier("fire").final_notice_at_once


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"BILLING_RETRY_SCHEDULE_DAYS": "[1, 5, 3]"}, "retry_schedule_days"),
        ({"BILLING_BLOCKED_DAYS": "8"}, "blocked_days (8) comes before warning_days (10)"),
        ({"BILLING_CANCELLED_DAYS": "12"}, "cancelled_days (12) comes before blocked_days (14)"),
        (
            {"BILLING_DUNNING_TIERS": '{"tolerable": {"retry_schedule_days": [3, 3]}}'},
            "tiers.tolerable: retry_schedule_days",
        ),
        (
            {"BILLING_DUNNING_TIERS": '{"fire": {"warning_days": 9}}'},
            "tiers.fire: blocked_days (7) comes before warning_days (9)",
        ),
        ({"BILLING_DUNNING_TIERS": '{"platinum": {}}'}, "unknown tier 'platinum'"),
        ({"BILLING_DUNNING_TIERS": '{"good": {"warning_dayz": 3}}'}, "warning_dayz"),
    ],
)
def test_a_ladder_out_of_order_is_refused_at_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(field)):
        DunningPolicy()

"""Pure rules added for behaviour-driven sequences: policy, re-entry, anchors, tokens, scores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.nurture import domain
from services.nurture.content import parse_sequence

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
QUIET = domain.QuietHours(21, 8)


def seq(**changes: object) -> domain.Sequence:
    base: dict = {"name": "s", "trigger": "deal.lost", "steps": [{"template": "later_checkin", "delay": "1d"}]}
    return parse_sequence(base | changes)


def test_quiet_hours_are_local_and_end_in_the_morning() -> None:
    # 20:00 UTC is 23:30 in Tehran: quiet until 08:00 there (04:30 UTC next day).
    assert domain.quiet_until(T0.replace(hour=20), timezone_name="Asia/Tehran", quiet=QUIET) == datetime(
        2030, 1, 8, 4, 30, tzinfo=UTC
    )
    assert domain.quiet_until(T0, timezone_name="Europe/London", quiet=QUIET) is None
    assert domain.quiet_until(T0.replace(hour=3), timezone_name="bogus/zone", quiet=QUIET) == T0.replace(hour=8)
    assert domain.quiet_until(T0.replace(hour=23), timezone_name="UTC", quiet=domain.QuietHours(0, 0)) is None


def test_cap_counts_a_rolling_week() -> None:
    recent = [T0 - timedelta(days=6), T0 - timedelta(days=1), T0 - timedelta(days=8)]
    assert domain.cap_until(T0, recent, cap=3) is None
    assert domain.cap_until(T0, recent, cap=2) == T0 + timedelta(days=1)
    assert domain.cap_until(T0, recent, cap=1) == T0 + timedelta(days=6)


def test_policy_order_condition_then_quiet_then_cap() -> None:
    common = {
        "now": T0.replace(hour=22),
        "timezone_name": "UTC",
        "quiet": QUIET,
        "cap": 1,
        "recent_marketing": [T0],
        "previous": domain.Previous(opened=True, clicked=False),
    }
    assert (
        domain.plan_send(category="marketing", immediate=False, condition="not_opened_previous", **common).action
        == "skip"
    )
    assert domain.plan_send(category="marketing", immediate=False, condition=None, **common).reason == "quiet_hours"
    assert domain.plan_send(category="marketing", immediate=True, condition=None, **common).reason == "frequency_cap"
    assert domain.plan_send(category="transactional", immediate=True, condition=None, **common).action == "send"


def test_before_steps_follow_the_anchor_and_late_notices_are_superseded() -> None:
    notices = seq(
        trigger="price.change_scheduled",
        anchor="effective_at",
        steps=[
            {"template": "price_change_notice", "before": "30d"},
            {"template": "price_change_notice", "before": "7d"},
        ],
    )
    far = T0 + timedelta(days=40)
    assert [d for _, d in notices.schedule(T0, far)] == [T0 + timedelta(days=10), T0 + timedelta(days=33)]
    near = T0 + timedelta(days=20)  # the 30-day notice is late: sent now
    assert [d for _, d in notices.schedule(T0, near)] == [T0, T0 + timedelta(days=13)]
    close = T0 + timedelta(days=5)  # both late: only the 7-day one, now
    assert [d for _, d in notices.schedule(T0, close)] == [None, T0]


def test_reentry_rules() -> None:
    past = [domain.PastEnrollment(key="a", active=False, ended_at=T0 - timedelta(days=100))]
    assert not domain.may_enroll(seq(), past, key="", now=T0)
    per = seq(trigger="invoice.issued", reentry={"per": "invoice_id"})
    assert domain.may_enroll(per, past, key="b", now=T0) and not domain.may_enroll(per, past, key="a", now=T0)
    after = seq(reentry={"after": "90d"})
    assert domain.may_enroll(after, past, key="x", now=T0)
    assert not domain.may_enroll(after, past, key="x", now=T0 - timedelta(days=20))
    active = [domain.PastEnrollment(key="a", active=True, ended_at=None)]
    assert not domain.may_enroll(seq(reentry="always"), active, key="x", now=T0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"trigger": "email.sent"}, "trigger"),
        ({"reentry": {"per": "nope"}}, "reentry"),
        ({"steps": [{"template": "later_checkin", "before": "3d"}]}, "anchor"),
        ({"steps": [{"template": "later_checkin", "if": "not_opened_previous"}]}, "previous step"),
        ({"exit_on": ["moon"]}, "exit_on"),
        ({"when": {"shoe_size": "42"}}, "when"),
        ({"then": "s"}, "cycle"),
    ],
)
def test_bad_definitions_say_why(changes: dict, reason: str) -> None:
    with pytest.raises(domain.SequenceError, match=reason):
        seq(**changes)


def test_cycles_through_then_are_refused() -> None:
    a, b = seq(name="a", then="b"), seq(name="b", then="a")
    with pytest.raises(domain.SequenceError, match="cycle: a -> b -> a"):
        domain.Catalog.of([a, b])
    with pytest.raises(domain.SequenceError, match="not a known sequence"):
        domain.Catalog.of([a])


def test_segment_conditions_and_exit_aliases() -> None:
    s = seq(when={"tier": ["best", "good"], "language": "fa"}, exit_on=["reply", "deal_won", "takeover"])
    assert s.applies_to(profile={"tier": "good", "language": "fa"})
    assert not s.applies_to(profile={"tier": "fire", "language": "fa"})
    assert s.exit_on == {"reply", "deal.won", "takeover.started"}


def test_message_tokens_are_bound_to_purpose_message_and_target() -> None:
    mid = uuid.uuid4()
    click = domain.message_token("k", "click", mid, "https://a.example")
    assert domain.verify_message_token("k", "click", click, "https://a.example") == mid
    assert domain.verify_message_token("k", "click", click, "https://evil.example") is None
    assert domain.verify_message_token("k", "open", click) is None
    assert domain.verify_message_token("other", "click", click, "https://a.example") is None
    assert domain.verify_message_token("k", "open", "ünïcode.x") is None
    assert domain.verify_unsubscribe_token("k", "ünïcode.x") is None


def test_engagement_decays_and_sales_ready_is_once() -> None:
    assert domain.engagement_after(40, T0 - timedelta(days=30), now=T0, kind="click") == 35
    assert domain.engagement_after(95, None, now=T0, kind="reply") == 100
    assert domain.becomes_sales_ready(60, threshold=50, already=False)
    assert not domain.becomes_sales_ready(60, threshold=50, already=True)


def test_complaints_are_flagged() -> None:
    assert domain.is_complaint(3, None) and domain.is_complaint(9, "I am disappointed")
    assert not domain.is_complaint(9, "great work") and not domain.is_complaint(None, None)


def test_backoff_doubles_up_to_a_ceiling() -> None:
    base, cap = timedelta(minutes=1), timedelta(minutes=10)
    assert [domain.retry_at(T0, n, base=base, ceiling=cap) - T0 for n in (1, 2, 3, 5)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=10),
    ]

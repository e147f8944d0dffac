"""Retention's pure rules on small datasets computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import pytest

from services.retention import domain
from services.retention.domain import HealthEvidence, HealthPolicy, OfferPolicy, SubscriptionView
from services.retention.schemas import CancellationReason
from services.retention.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = HealthPolicy(weights={"punctuality": 35, "failures": 20, "complaints": 20, "engagement": 10, "tenure": 15})


def since(days: int) -> datetime:
    return NOW - timedelta(days=days)


# --------------------------------------------------------------------------- health


def test_new_client_without_evidence_starts_green() -> None:
    # 35*100 + 20*100 + 20*100 + 10*50 (placeholder) + 15*0 (no tenure) = 8000 -> 80
    health = domain.assess_health(HealthEvidence(client_since=NOW), POLICY, now=NOW)
    assert (health.score, health.band) == (80, "green")
    assert health.factors_dict()["tenure"] == {"value": 0, "weight": 15, "evidence": {"days": 0}}


def test_mixed_client_is_yellow_with_the_evidence_behind_each_factor() -> None:
    evidence = HealthEvidence(
        payments_on_time=3, payments_late=1, payments_failed=1, complaints=2, feedback_count=5, client_since=since(182)
    )
    health = domain.assess_health(evidence, POLICY, now=NOW)
    factors = health.factors_dict()
    # punctuality 3/4 = 75; failures 100-25 = 75; complaints 100-2*25 = 50; tenure 18200//365 = 49
    assert {name: f["value"] for name, f in factors.items()} == {
        "punctuality": 75,
        "failures": 75,
        "complaints": 50,
        "engagement": 50,
        "tenure": 49,
        "scope": 100,  # weight 0 in this policy
    }
    assert factors["punctuality"]["evidence"] == {"on_time": 3, "late": 1}
    assert factors["complaints"]["evidence"] == {"complaints": 2, "feedback": 5}
    assert factors["failures"] == {"value": 75, "weight": 20, "evidence": {"failed": 1}}
    # (2625 + 1500 + 1000 + 500 + 735) / 100 = 63.6 -> 64
    assert (health.score, health.band) == (64, "yellow")


def test_bad_payer_who_complains_is_red_and_values_never_go_below_zero() -> None:
    evidence = HealthEvidence(payments_late=2, payments_failed=6, complaints=9, client_since=since(400))
    health = domain.assess_health(evidence, POLICY, now=NOW)
    assert [f.value for f in health.factors] == [0, 0, 0, 50, 100, 100]
    # (10*50 + 15*100) / 100 = 20
    assert (health.score, health.band) == (20, "red")


def test_score_rounds_half_up() -> None:
    policy = HealthPolicy(weights={"punctuality": 1, "tenure": 1})
    # punctuality 100, tenure 400//365 = 1 -> 50.5 -> 51 (half-even would say 50)
    health = domain.assess_health(HealthEvidence(client_since=since(4)), policy, now=NOW)
    assert (health.score, health.band) == (51, "yellow")
    # 1 on time out of 8 = 12.5 -> 13
    late = domain.assess_health(HealthEvidence(payments_on_time=1, payments_late=7), policy, now=NOW)
    assert late.factors_dict()["punctuality"]["value"] == 13


def test_weights_come_from_settings() -> None:
    settings = Settings(health_weight_engagement=0, health_weight_tenure=0)
    policy = HealthPolicy(weights=settings.health_weights)
    health = domain.assess_health(HealthEvidence(payments_failed=1, client_since=NOW), policy, now=NOW)
    # (30*100 + 15*75 + 20*100 + 10*100) / 75 = 95
    assert health.score == 95
    assert health.factors_dict()["engagement"]["weight"] == 0


def test_policy_refuses_unknown_factors_and_zero_weights() -> None:
    with pytest.raises(ValueError, match="unknown health factors"):
        HealthPolicy(weights={"vibes": 10})
    with pytest.raises(ValueError, match="positive"):
        HealthPolicy(weights={"tenure": 0})


@pytest.mark.parametrize(
    ("score", "band"),
    [(0, "red"), (50, "red"), (51, "yellow"), (75, "yellow"), (76, "green"), (100, "green")],
)
def test_bands(score: int, band: str) -> None:
    assert domain.band_of(score) == band


def test_band_thresholds_are_settings() -> None:
    assert domain.band_of(60, yellow_from=61, green_from=90) == "red"
    assert domain.band_of(89, yellow_from=61, green_from=90) == "yellow"


# --------------------------------------------------------------------------- subscriptions


def test_status_of_several_subscriptions_is_the_liveliest() -> None:
    assert domain.subscription_status([]) == "none"
    assert domain.subscription_status(["cancelled"]) == "cancelled"
    assert domain.subscription_status(["cancelled", "paused"]) == "paused"
    assert domain.subscription_status(["paused", "active", "cancelled"]) == "active"


def test_mrr_counts_active_subscriptions_only_per_currency() -> None:
    subs = [
        SubscriptionView("active", Decimal("1000.00"), "EUR"),
        SubscriptionView("paused", Decimal("500.00"), "EUR"),
        SubscriptionView("active", Decimal("200.50"), "USD"),
        SubscriptionView("cancelled", Decimal("300.00"), "EUR"),
        SubscriptionView("active", Decimal("250.00"), "EUR"),
        SubscriptionView("active", None, None),  # its start never reached us: no fee known
    ]
    assert domain.mrr_by_currency(subs) == {"EUR": Decimal("1250.00"), "USD": Decimal("200.50")}


def test_money_totals_never_mix_currencies() -> None:
    totals = domain.add_money({"EUR": Decimal("10")}, [("USD", Decimal("1.10")), ("EUR", Decimal("0.05"))])
    assert totals == {"EUR": Decimal("10.05"), "USD": Decimal("1.10")}


# --------------------------------------------------------------------------- save offers

OFFERS = OfferPolicy(pause_fee_share=Decimal("0.2"), pause_months=2, discount_percent=Decimal("20"), discount_months=3)


def offer(
    *,
    tier: str | None = "good",
    band: str | None = "green",
    reason: str = "budget_cut",
    fee: str = "1000",
    hours: str | None = None,
) -> domain.Offer:
    return domain.choose_offer(
        tier=tier,
        band=band,
        reason=reason,
        monthly_fee=Decimal(fee),
        currency="EUR",
        policy=OFFERS,
        included_hours=Decimal(hours) if hours is not None else None,
    )


def test_fire_tier_gets_no_offer() -> None:
    for reason in domain.CANCELLATION_REASONS:
        assert offer(tier="fire", reason=reason).kind == "none"


def test_tolerable_client_in_poor_health_gets_no_offer_but_a_healthier_one_does() -> None:
    assert offer(tier="tolerable", band="red").kind == "none"
    assert offer(tier="tolerable", band="yellow").kind == "pause"


@pytest.mark.parametrize("reason", [r for r in domain.CANCELLATION_REASONS if r not in ("price", "not_using")])
def test_most_reasons_get_a_pause_at_a_low_fee(reason: str) -> None:
    made = offer(reason=reason)
    assert (made.kind, made.fee, made.months, made.currency) == ("pause", Decimal("200.00"), 2, "EUR")
    assert made.discount_percent is None


def test_price_gets_a_discount() -> None:
    made = offer(tier="best", reason="price")
    assert (made.kind, made.fee, made.discount_percent, made.months) == (
        "discount",
        Decimal("800.00"),
        Decimal("20"),
        3,
    )
    assert "20% off for 3 months" in made.description


def test_not_using_gets_a_smaller_plan_for_some_months() -> None:
    made = offer(reason="not_using", hours="10")
    # By hand with the defaults: 60% of 1000 for half of the 10 hours, 3 months.
    assert (made.kind, made.fee, made.included_hours, made.months) == (
        "downgrade",
        Decimal("600.00"),
        Decimal("5.00"),
        3,
    )
    assert made.description == "smaller plan for 3 months: 600.00 EUR a month, 5 hours included"
    assert offer(reason="not_using").included_hours is None  # no hours on the plan: a smaller fee alone
    assert offer(reason="not_using", fee="0").kind == "pause"  # nothing smaller than free


def test_a_tailored_offer_names_the_field_that_is_wrong() -> None:
    def tailored(**kw: object) -> domain.Offer:
        base: dict[str, object] = {
            "kind": "discount",
            "monthly_fee": Decimal(1000),
            "currency": "EUR",
            "discount_percent": Decimal(25),
            "fee": None,
            "months": 2,
            "included_hours": None,
        }
        return domain.tailored_offer(**{**base, **kw})  # type: ignore[arg-type]

    assert tailored().fee == Decimal("750.00")
    assert tailored(discount_percent=Decimal(100)).fee == Decimal("0.00")  # a free month is a discount too
    for kw, field in (
        ({"discount_percent": Decimal("100.01")}, "discount_percent"),
        ({"discount_percent": Decimal(0)}, "discount_percent"),
        ({"months": 0}, "months"),
        ({"months": 25}, "months"),
        ({"kind": "downgrade", "fee": Decimal(1000)}, "fee"),
        ({"kind": "gift"}, "kind"),
    ):
        with pytest.raises(ValueError, match=f"^{field}:"):
            tailored(**kw)
    small = tailored(kind="downgrade", fee=Decimal("499.999"), included_hours=Decimal(4))
    assert (small.fee, small.included_hours) == (Decimal("500.00"), Decimal(4))


def test_offer_fee_is_rounded_to_cents() -> None:
    assert offer(fee="333.33").fee == Decimal("66.67")  # 66.666
    assert offer(fee="333.33", reason="price").fee == Decimal("266.66")  # 266.664


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cancellation reason"):
        offer(reason="bored")


def test_http_reasons_match_the_domain() -> None:
    assert set(get_args(CancellationReason)) == set(domain.CANCELLATION_REASONS)


# --------------------------------------------------------------------------- logo churn


def test_logo_churn_is_lost_over_ever_subscribed() -> None:
    churn = domain.logo_churn(lost=1, base=4)
    assert (churn.rate, churn.lost, churn.base, churn.reason) == (Decimal("0.2500"), 1, 4, None)
    assert domain.logo_churn(lost=2, base=3).rate == Decimal("0.6667")
    assert domain.logo_churn(lost=0, base=5).rate == Decimal("0.0000")


def test_logo_churn_without_clients_is_undefined_not_a_division_by_zero() -> None:
    churn = domain.logo_churn(lost=0, base=0)
    assert churn.rate is None and churn.reason and "undefined" in churn.reason

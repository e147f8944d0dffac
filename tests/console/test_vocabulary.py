"""The console's forms offer the values the services take: the contract's funnel stages,
retention's cancellation reasons and billing's payment methods (a value the console offered and
the service refused would be a form no one can send)."""

from __future__ import annotations

from console import pages
from services.billing.domain import PAYMENT_METHODS
from services.retention.domain import CANCELLATION_REASONS
from shared.events import FUNNEL_STAGES


def test_the_console_offers_what_the_services_take() -> None:
    assert pages.STAGES == FUNNEL_STAGES
    assert set(pages.CANCEL_REASONS) == set(CANCELLATION_REASONS)
    assert set(pages.PAY_METHODS) == set(PAYMENT_METHODS)

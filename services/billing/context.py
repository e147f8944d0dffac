"""What billing's use cases need besides the transaction: settings, metrics, the card gateway."""

from __future__ import annotations

from dataclasses import dataclass

from services.billing.gateway import CardGateway, NoGateway
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings


@dataclass
class Billing:
    settings: Settings
    metrics: BillingMetrics
    gateway: CardGateway = NoGateway()

    @property
    def hard_declines(self) -> frozenset[str]:
        return frozenset(self.settings.hard_decline_codes)

    @property
    def grace_declines(self) -> frozenset[str]:
        return frozenset(self.settings.grace_decline_codes)

"""What billing's use cases need besides the transaction: settings, metrics, the card gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.billing.gateway import CardGateway, NoGateway
from services.billing.metrics import BillingMetrics
from services.billing.settings import Settings
from shared.jobs import Jobs


@dataclass
class Billing:
    settings: Settings
    metrics: BillingMetrics
    gateway: CardGateway = field(default_factory=NoGateway)
    # The scheduled jobs' poison isolation (the composition root hands in one with the
    # service's metrics).
    jobs: Jobs = field(default_factory=Jobs)

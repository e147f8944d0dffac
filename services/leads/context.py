"""What leads' use cases need besides the transaction."""

from __future__ import annotations

from dataclasses import dataclass

from services.leads.metrics import LeadsMetrics
from services.leads.settings import Settings


@dataclass
class Context:
    """The service's settings (its policies) and its metrics."""

    settings: Settings
    metrics: LeadsMetrics

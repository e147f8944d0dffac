"""What leads' use cases need besides the transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.leads.metrics import LeadsMetrics
from services.leads.settings import Settings
from shared.jobs import Jobs


@dataclass
class Context:
    """The service's settings (its policies) and its metrics."""

    settings: Settings
    metrics: LeadsMetrics
    # The scheduled jobs' poison isolation (the composition root hands in one with the metrics).
    jobs: Jobs = field(default_factory=Jobs)

"""What every retention use case needs besides the transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.retention.metrics import RetentionMetrics
from services.retention.settings import Settings
from shared.jobs import Jobs


@dataclass(frozen=True)
class Context:
    """The settings (the rules' policies: ``settings.health``, ``settings.risk``...) and the metrics."""

    settings: Settings
    metrics: RetentionMetrics
    # The scheduled jobs' poison isolation (the composition root hands in one with the
    # service's metrics).
    jobs: Jobs = field(default_factory=Jobs)

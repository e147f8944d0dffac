"""What leads' use cases need besides the transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.leads.metrics import LeadsMetrics
from services.leads.settings import Settings
from shared.jobs import Jobs

# How long a value read in one transaction serves the next ones of this process. A change made
# here is seen at once (its writer drops the value at its commit); one made by another instance
# of the service, within this long.
RECENT_S = 2.0


class Recent:
    """A value that rarely changes (the ICP in force), kept between transactions for
    ``RECENT_S``: reading it was one statement of every ``POST /leads``. Freshness is measured
    on the monotonic clock, as it says nothing of business time."""

    def __init__(self, ttl_s: float = RECENT_S) -> None:
        self.ttl_s = ttl_s
        self._value: Any = None
        self._until = 0.0

    def get(self) -> Any:
        return self._value if time.monotonic() < self._until else None

    def keep(self, value: Any) -> None:
        self._value, self._until = value, time.monotonic() + self.ttl_s

    def forget(self) -> None:
        self._value, self._until = None, 0.0


@dataclass
class Context:
    """The service's settings (its policies) and its metrics."""

    settings: Settings
    metrics: LeadsMetrics
    # The scheduled jobs' poison isolation (the composition root hands in one with the metrics).
    jobs: Jobs = field(default_factory=Jobs)
    # The ICP in force, between transactions (qualification.current_icp).
    icp: Recent = field(default_factory=Recent)
    # The assignment rule book in force (sales.rules_in_force).
    rules: Recent = field(default_factory=Recent)

"""Leads' Prometheus metrics.

Counters move only after the transaction that caused them committed (``tx.after_commit``), so
a rolled-back request counts nothing. Stage gauges are read back from the database, so restarts
and several instances never make them drift."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.leads import domain
from services.leads.store import Lead

log = logging.getLogger(__name__)


REFRESH_EVERY_S = 1.0


class LeadsMetrics:
    def __init__(self, registry: CollectorRegistry, sessions: async_sessionmaker) -> None:
        labels = {"registry": registry}
        self.sessions = sessions
        self.captured = Counter(
            "clientflow_leads_captured_total", "New leads captured, by channel", ["channel"], **labels
        )
        self.duplicates = Counter(
            "clientflow_leads_duplicates_total",
            "Captures of a person or company already known, by what matched (email, company_domain)",
            ["matched_by"],
            **labels,
        )
        self.qualified = Counter("clientflow_leads_qualified_total", "Leads qualified (BANT)", **labels)
        self.disqualified = Counter(
            "clientflow_leads_disqualified_total", "Leads disqualified, by reason", ["reason"], **labels
        )
        self.deals = Counter(
            "clientflow_leads_deals_total", "Deals by outcome (proposed, won, lost)", ["outcome"], **labels
        )
        self.deal_value = Counter(
            "clientflow_leads_deal_value_total",
            "Value of deals by outcome and currency (retainers count one monthly fee plus lines)",
            ["outcome", "currency"],
            **labels,
        )
        self.change_requests = Counter(
            "clientflow_leads_change_requests_total", "Change requests by scope (in, out)", ["scope"], **labels
        )
        self.import_rows = Counter(
            "clientflow_leads_import_rows_total",
            "CSV import rows by outcome (accepted, duplicate, rejected)",
            ["outcome"],
            **labels,
        )
        self.erased = Counter("clientflow_leads_erased_total", "Leads erased on request", **labels)
        self.stage = Gauge("clientflow_leads_stage", "Leads currently in each funnel stage", ["stage"], **labels)
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def deal(self, outcome: str, value: Decimal, currency: str) -> None:
        self.deals.labels(outcome).inc()
        self.deal_value.labels(outcome, currency).inc(float(value))

    async def refresh(self) -> None:
        """Read the stage gauges back from the database."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Lead.stage, func.count()).where(Lead.merged_into.is_(None)).group_by(Lead.stage)
            )
            counts = dict.fromkeys(domain.STAGES, 0) | dict(rows.all())
        for stage, n in counts.items():
            self.stage.labels(stage).set(n)

    def refresh_soon(self) -> None:
        """After a commit that moved stages: one refresh at a time, one more if asked meanwhile."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._again = False
            started = loop.time()
            try:
                await self.refresh()
            except Exception:  # a scrape shows stale numbers rather than the service failing
                log.exception("refreshing leads gauges failed")
            if not self._again:
                return
            # Under load every commit asks again: count the funnel once a second at most.
            await asyncio.sleep(max(0.0, REFRESH_EVERY_S - (loop.time() - started)))

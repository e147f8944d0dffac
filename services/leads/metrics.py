"""Leads' Prometheus metrics.

Counters move only after the transaction that caused them committed, so a rolled-back request
counts nothing: what an event says is counted from the committed events (``count``, given to
``UnitOfWorkFactory.count_emitted``), whichever path emitted them; the few counts no event
carries are counted by the use case with ``tx.after_commit``. Stage gauges are read back from
the database, so restarts and several instances never make them drift."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.leads import domain
from services.leads.store import Lead
from shared.events import Envelope
from shared.reads import ReadPool
from shared.uow import UnitOfWork

if TYPE_CHECKING:
    from services.leads.team import RepFigures

log = logging.getLogger(__name__)


REFRESH_EVERY_S = 1.0
# Events after which the stage gauges may have changed (a new lead enters ``awareness``).
STAGE_MOVES = frozenset({"lead.captured", "lead.stage_changed"})


async def _count_stages(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Lead.stage, func.count()).where(Lead.merged_into.is_(None)).group_by(Lead.stage)
    )
    return dict.fromkeys(domain.STAGES, 0) | {stage: int(n) for stage, n in rows.all()}


async def _stage_counts(tx: UnitOfWork) -> dict[str, int]:
    return await _count_stages(tx.session)


class LeadsMetrics:
    def __init__(
        self, registry: CollectorRegistry, sessions: async_sessionmaker, reads: ReadPool | None = None
    ) -> None:
        self.sessions = sessions
        self.reads = reads
        self.captured = Counter(
            "clientflow_leads_captured_total", "New leads captured, by channel", ["channel"], registry=registry
        )
        self.duplicates = Counter(
            "clientflow_leads_duplicates_total",
            "Captures of a person or company already known, by what matched (email, company_domain)",
            ["matched_by"],
            registry=registry,
        )
        self.qualified = Counter("clientflow_leads_qualified_total", "Leads qualified (BANT)", registry=registry)
        self.disqualified = Counter(
            "clientflow_leads_disqualified_total", "Leads disqualified, by reason", ["reason"], registry=registry
        )
        self.deals = Counter(
            "clientflow_leads_deals_total", "Deals by outcome (proposed, won, lost)", ["outcome"], registry=registry
        )
        self.deal_value = Counter(
            "clientflow_leads_deal_value_total",
            "Value of deals by outcome and currency (retainers count one monthly fee plus lines)",
            ["outcome", "currency"],
            registry=registry,
        )
        self.change_requests = Counter(
            "clientflow_leads_change_requests_total", "Change requests by scope (in, out)", ["scope"], registry=registry
        )
        self.import_rows = Counter(
            "clientflow_leads_import_rows_total",
            "CSV import rows by outcome (accepted, duplicate, rejected)",
            ["outcome"],
            registry=registry,
        )
        self.erased = Counter("clientflow_leads_erased_total", "Leads erased on request", registry=registry)
        # Exports on request (exports.py): asked for, and complete with every service's part.
        self.exports_requested = Counter(
            "clientflow_leads_exports_requested_total", "Exports of a person's data requested", registry=registry
        )
        self.exports_completed = Counter(
            "clientflow_leads_exports_completed_total",
            "Exports of a person's data complete (every service's part in)",
            registry=registry,
        )
        self.assigned = Counter(
            "clientflow_leads_assigned_total",
            "Owners given: role lead (sales) or account (success); outcome owner or pool (nobody could take it)",
            ["role", "outcome"],
            registry=registry,
        )
        self.tasks_raised = Counter(
            "clientflow_leads_tasks_raised_total",
            "Tasks leads raised for people, by kind (first_touch_overdue, next_step, tender_deadline, handoff)",
            ["kind"],
            registry=registry,
        )
        self.activities = Counter(
            "clientflow_leads_activities_total",
            "Calls, meetings, e-mails and notes logged",
            ["kind"],
            registry=registry,
        )
        # Each rep's month so far (GET /team/performance for this month), for a panel per rep.
        self.rep_leads = Gauge(
            "clientflow_team_rep_leads", "Leads a rep was given this month", ["rep"], registry=registry
        )
        self.rep_won = Gauge(
            "clientflow_team_rep_won_value", "Value a rep won this month", ["rep", "currency"], registry=registry
        )
        self.rep_commission = Gauge(
            "clientflow_team_rep_commission", "A rep's commission this month", ["rep", "currency"], registry=registry
        )
        self.rep_attainment = Gauge(
            "clientflow_team_rep_attainment_ratio",
            "Won value over quota this month (1 = met)",
            ["rep"],
            registry=registry,
        )
        self.rep_first_touch = Gauge(
            "clientflow_team_rep_first_touch_median_hours",
            "Median business hours from capture to a rep's first touch, this month",
            ["rep"],
            registry=registry,
        )
        self.stage = Gauge(
            "clientflow_leads_stage", "Leads currently in each funnel stage", ["stage"], registry=registry
        )
        self._running: asyncio.Task[None] | None = None
        self._again = False
        self._last_refresh = float("-inf")

    def count(self, event: Envelope) -> None:
        """Count one event a committed transaction emitted; refresh the stage gauges after one
        that moved a lead into a stage."""
        data = event.data
        match event.type:
            case "lead.captured":
                if not data.get("duplicate"):
                    self.captured.labels(data["channel"]).inc()
                    self.assigned.labels("lead", "owner" if data.get("owner_id") else "pool").inc()
            case "lead.qualified":
                self.qualified.inc()
            case "lead.disqualified":
                for reason in data["reasons"]:
                    self.disqualified.labels(reason).inc()
            case "deal.proposed" | "deal.won":
                self.deal(
                    event.type.removeprefix("deal."), value=Decimal(str(data["total"])), currency=data["currency"]
                )
            case "deal.lost":
                self.deals.labels("lost").inc()  # its value is not in the event: see deals.lose_deal
            case "deal.change_requested":
                self.change_requests.labels("in" if data["in_scope"] else "out").inc()
            case "lead.erased":
                self.erased.inc()
            case "export.requested":
                self.exports_requested.inc()
            case "lead.assigned":
                self.assigned.labels(data["role"], "owner" if data["owner_id"] else "pool").inc()
            case "task.raised":
                self.tasks_raised.labels(data["kind"]).inc()
            case "lead.activity_logged":
                self.activities.labels(data["kind"]).inc()
        if event.type in STAGE_MOVES:
            self.refresh_soon()

    def team(self, reps: Iterable[RepFigures]) -> None:
        """Set each rep's gauges from this month's figures (people gone drop out)."""
        for gauge in (self.rep_leads, self.rep_won, self.rep_commission, self.rep_attainment, self.rep_first_touch):
            gauge.clear()
        for rep in reps:
            self.rep_leads.labels(rep.email).set(rep.leads_owned)
            for currency, amount in rep.won_value.items():
                self.rep_won.labels(rep.email, currency).set(float(amount))
            if rep.commission is not None and rep.commission_currency:
                self.rep_commission.labels(rep.email, rep.commission_currency).set(float(rep.commission))
            if rep.attainment is not None:
                self.rep_attainment.labels(rep.email).set(float(rep.attainment))
            if rep.first_touch_median_hours is not None:
                self.rep_first_touch.labels(rep.email).set(rep.first_touch_median_hours)

    def deal(self, outcome: str, *, value: Decimal, currency: str) -> None:
        self.deals.labels(outcome).inc()
        self.deal_value.labels(outcome, currency).inc(float(value))

    async def refresh(self) -> None:
        """Read the stage gauges back from the database: through the read pool when there is one
        (a read-only transaction on its thread; a session of the service's own would take the
        write lock at BEGIN and queue behind every consumer batch for a count)."""
        if self.reads is not None:
            counts = await self.reads.run(_stage_counts, key="leads.stage_counts")
        else:
            async with self.sessions() as session:
                counts = await _count_stages(session)
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
        # Once a second at most, also when commits come one at a time (the count reads every
        # lead: after each commit it was a query per captured lead; a scrape counts afresh).
        await asyncio.sleep(max(0.0, REFRESH_EVERY_S - (loop.time() - self._last_refresh)))
        while True:
            self._again = False
            started = self._last_refresh = loop.time()
            try:
                await self.refresh()
            except Exception:  # a scrape shows stale numbers rather than the service failing
                log.exception("refreshing leads gauges failed")
            if not self._again:
                return
            # Under load every commit asks again: count the funnel once a second at most.
            await asyncio.sleep(max(0.0, REFRESH_EVERY_S - (loop.time() - started)))

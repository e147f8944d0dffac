"""Retention's Prometheus metrics.

Counters count what was committed, once: the events a transaction emitted, whichever path
emitted them (HTTP, consumer, scheduled job), through ``count_emitted``, which the composition
root hands to ``UnitOfWorkFactory.count_emitted``. Gauges are read back from the database
rather than moved by +1/-1 in memory: a restart, a rolled-back transaction or a second
instance would make in-memory counts drift. They are refreshed after a commit that
changed them (at most once a second: see ``request_refresh``), before a scrape that would
otherwise read them stale, and on the review schedule."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Float, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.retention import domain
from services.retention.store import Client, Subscription
from shared import events as ev
from shared.events import Envelope
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
# At most one refresh of the gauges a second while commits come in (a scrape refreshes at once).
REFRESH_EVERY_S = 1.0
# The events counted when committed (``cancellation.saved`` does not carry the reason its count
# is labelled with: ``cancellations.accept_offer`` counts it after its commit).
_COUNTED = frozenset(
    {
        "cancellation.requested",
        "cancellation.completed",
        "churn_risk.raised",
        "loyalty.points_awarded",
        "referral.made",
        "client.terminated",
    }
)


class RetentionMetrics:
    """Clients by tier and by health band, MRR by currency, cancellations by reason and outcome."""

    def __init__(self, registry: CollectorRegistry, sessions: async_sessionmaker) -> None:
        self.sessions = sessions
        self.clients_by_tier = Gauge(
            "clientflow_retention_clients_by_tier", "Clients by tier", ["tier"], registry=registry
        )
        self.clients_by_band = Gauge(
            "clientflow_retention_clients_by_health_band", "Clients by health band", ["band"], registry=registry
        )
        self.mrr = Gauge(
            "clientflow_retention_mrr",
            "Monthly recurring revenue of active subscriptions (paused ones excluded)",
            ["currency"],
            registry=registry,
        )
        self.cancellations = Counter(
            "clientflow_retention_cancellations_total",
            "Cancellation requests and their outcomes (requested, saved, completed)",
            ["reason", "outcome"],
            registry=registry,
        )
        self.churn_risks = Counter(
            "clientflow_retention_churn_risks_total", "Churn-risk episodes opened, by rule", ["rule"], registry=registry
        )
        self.loyalty_points = Counter(
            "clientflow_retention_loyalty_points_total", "Loyalty points awarded", registry=registry
        )
        self.referrals = Counter(
            "clientflow_retention_referrals_total", "Referrals made and converted", ["outcome"], registry=registry
        )
        self.economics = Gauge(
            "clientflow_retention_economics",
            "Unit economics of the trailing period (GET /economics): one sample per figure and channel",
            ["figure", "channel", "currency"],
            registry=registry,
        )
        self.mrr_movements = Gauge(
            "clientflow_retention_mrr_movements",
            "MRR movements of the trailing period by kind",
            ["kind", "channel", "currency"],
            registry=registry,
        )
        self.terminations = Counter(
            "clientflow_retention_terminations_total",
            "Relationships the agency ended (POST /clients/{lead_id}/termination), by reason",
            ["reason"],
            registry=registry,
        )
        self._mrr_currencies: set[str] = set()
        # Throttled refreshes (``request_refresh``): changed since the last one, one to come,
        # when the last one started (loop time), and one at a time.
        self._dirty = False
        self._scheduled = False
        self._last_refresh = float("-inf")
        self._lock = asyncio.Lock()
        self._running: asyncio.Task[None] | None = None

    def count_cancellation(self, reason: str, outcome: str) -> None:
        self.cancellations.labels(reason, outcome).inc()

    def count_emitted(self, event: Envelope) -> None:
        """Count one event a committed transaction emitted (``UnitOfWorkFactory.count_emitted``)."""
        p = event.payload() if event.type in _COUNTED else None
        if isinstance(p, ev.CancellationRequested):
            self.count_cancellation(p.reason, "requested")
        elif isinstance(p, ev.CancellationCompleted):
            # Confirmed over HTTP, or billing ended the last subscription: counted alike.
            self.count_cancellation(p.reason, "completed")
        elif isinstance(p, ev.ChurnRiskRaised):
            for rule in p.reasons:
                self.churn_risks.labels(rule).inc()
        elif isinstance(p, ev.LoyaltyPointsAwarded):
            self.loyalty_points.inc(p.points)
        elif isinstance(p, ev.ReferralMade):
            self.referrals.labels("made").inc()
        elif isinstance(p, ev.ClientTerminated):
            self.terminations.labels(p.reason).inc()

    def refresh_after_commit(self, tx: UnitOfWork) -> None:
        """Refresh the gauges once ``tx`` has committed (never on a rollback)."""
        tx.after_commit(self.request_refresh)

    def request_refresh(self) -> None:
        """The counts changed: refresh them at most once per ``REFRESH_EVERY_S`` (the last
        change of a burst is always refreshed, a moment later), and at once for a scrape
        (``refresh_if_dirty``). A refresh counts every client; after every commit it was a tenth
        of a batch's time with 100,000 clients."""
        self._dirty = True
        if self._scheduled:
            return  # the refresh to come reads this change as well
        self._scheduled = True
        loop = asyncio.get_running_loop()
        delay = self._last_refresh + REFRESH_EVERY_S - loop.time()
        # A timer rather than a sleeping task: one pending when the loop closes is dropped quietly.
        if delay > 0:
            loop.call_later(delay, self._start_refresh)
        else:
            self._start_refresh()

    def _start_refresh(self) -> None:
        self._running = asyncio.get_running_loop().create_task(self._scheduled_refresh())

    async def _scheduled_refresh(self) -> None:
        try:
            await self.refresh_if_dirty()
        except Exception as exc:  # metrics must never break a business flow
            log.warning("refreshing retention gauges failed: %r", exc)
            return  # the next commit or scrape tries again
        finally:
            self._scheduled = False
        if self._dirty:  # committed while the counts were read
            self.request_refresh()

    async def refresh_if_dirty(self) -> None:
        """Refresh the gauges if a commit changed them since the last refresh; a refresh in
        flight is waited for (it may have started before the commit)."""
        async with self._lock:
            if self._dirty:
                await self._refresh_now()

    async def before_scrape(self) -> None:
        """What is scraped is never older than the scrape (``ServiceRuntime.scrape_refreshers``)."""
        try:
            await self.refresh_if_dirty()
        except Exception as exc:  # the other metrics are still worth scraping
            log.warning("refreshing retention gauges failed: %r", exc)

    async def refresh(self) -> None:
        """Read the gauges from the database now."""
        async with self._lock:
            await self._refresh_now()

    async def _refresh_now(self) -> None:
        self._dirty = False
        self._last_refresh = asyncio.get_running_loop().time()
        try:
            async with self.sessions() as session:
                await self._refresh(session)
        except BaseException:
            self._dirty = True  # still to do
            raise

    async def _refresh(self, session: AsyncSession) -> None:
        is_client = Client.became_client_at.is_not(None)
        tiers = dict.fromkeys(domain.TIERS, 0)
        rows = await session.execute(select(Client.tier, func.count()).where(is_client).group_by(Client.tier))
        tiers.update({tier: n for tier, n in rows.all() if tier})
        bands = dict.fromkeys(domain.BANDS, 0)
        rows = await session.execute(select(Client.band, func.count()).where(is_client).group_by(Client.band))
        bands.update({band: n for band, n in rows.all() if band})
        mrr = await _mrr(session)
        for tier, n in tiers.items():
            self.clients_by_tier.labels(tier).set(n)
        for band, n in bands.items():
            self.clients_by_band.labels(band).set(n)
        # A currency whose MRR fell to nothing reads 0, not its last value.
        self._mrr_currencies |= set(mrr)
        for currency in self._mrr_currencies:
            # Prometheus samples are floats; this is reporting, never money arithmetic.
            self.mrr.labels(currency).set(float(mrr.get(currency, Decimal(0))))

    ECONOMICS_FIGURES = (
        "leads",
        "new_clients",
        "spend",
        "cac",
        "arpa",
        "ltv",
        "ltv_cac",
        "payback_months",
        "logo_churn",
        "revenue_churn",
        "nrr",
        "grr",
        "fire_share",
        "leaked_revenue",
        "mrr_start",
        "mrr_end",
    )

    def publish_economics(self, figures: dict, *, channel: str) -> None:
        """Set the economics gauges from one GET /economics answer; an undefined figure is NaN."""
        currency = figures["currency"]
        for name in self.ECONOMICS_FIGURES:
            value = figures.get(name)
            self.economics.labels(name, channel, currency).set(float("nan") if value is None else float(value))
        # The agency's own figures (domain/figures.py), flattened into the same gauge.
        derived = {
            "roi": figures.get("roi"),
            "cost_per_lead": figures.get("cost_per_lead"),
            "cost_per_qualified_lead": figures.get("cost_per_qualified_lead"),
            "yearly_revenue_retention": (figures.get("yearly_revenue_retention") or {}).get("ratio"),
            "median_lifetime_months": figures.get("median_lifetime_months"),
            "leak": (figures.get("leak") or {}).get("share"),
            "included_hours_months_longer": (figures.get("included_hours") or {}).get("months_longer"),
        }
        for name, value in derived.items():
            self.economics.labels(name, channel, currency).set(float("nan") if value is None else float(value))
        for step in figures["funnel"]:
            rate = step["from_leads"]
            self.economics.labels(f"conversion_{step['stage']}", channel, currency).set(
                float("nan") if rate is None else float(rate)
            )
        for kind, amount in figures["mrr_movements"].items():
            self.mrr_movements.labels(kind, channel, currency).set(float(amount))


# Money is exact text on SQLite, where SUM would add floats: the fees are summed there as whole
# ten-thousandths (Money keeps four decimals): exact for a fee under 9 * 10**11 (a float has 53
# bits) and a total under 9 * 10**14 (SQLite sums integers in 64 bits).
_UNITS = 10_000


async def _mrr(session: AsyncSession) -> dict[str, Decimal]:
    """MRR by currency, summed in SQL (``domain.mrr_by_currency``'s rule: active subscriptions
    with a fee and a currency). Reading every active subscription to add them up in Python was
    a fifth of retention's time with 100x history while something scraped ``/metrics`` often."""
    fee = Subscription.monthly_fee
    sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
    total = func.sum(cast(func.round(cast(fee, Float) * _UNITS), Integer)) if sqlite else func.sum(fee)
    rows = await session.execute(
        select(Subscription.currency, total)
        .where(Subscription.status == "active", fee.is_not(None), Subscription.currency.is_not(None))
        .group_by(Subscription.currency)
    )
    mrr: dict[str, Decimal] = {}
    for currency, amount in rows.all():
        if currency and amount is not None:
            mrr[currency] = Decimal(amount).scaleb(-4) if sqlite else Decimal(amount)
    return dict(sorted(mrr.items()))

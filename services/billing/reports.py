"""Figures recomputed from the database for the gauges and ``GET /reports/summary``: MRR
(active subscriptions only: paused is neither churn nor revenue), receivables, overdue
invoices, dunning states, days sales outstanding and leaked revenue, each per currency
(amounts in different currencies are never added together)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from services.billing import domain, projects
from services.billing.context import Billing
from services.billing.store import DunningCase, Invoice, Subscription
from shared.money import quantize
from shared.uow import UnitOfWork


async def summary(tx: UnitOfWork, ctx: Billing) -> dict[str, Any]:
    """The figures of ``GET /reports/summary``, per currency where they are money."""
    now = tx.now()
    window = ctx.settings.dso_days
    # Every figure is grouped in SQL and added up here from distinct values and their counts:
    # the pass read each subscription and open invoice (100,000 of each with a grown history,
    # over a second of the consumer's loop every report_interval_s) where it now reads one row
    # per distinct amount. The money is still added as Decimal (SQLite keeps it as text: its
    # SUM would be a float).
    by_status = await tx.session.execute(select(Subscription.status, func.count()).group_by(Subscription.status))
    statuses: dict[str, int] = dict(by_status.all())
    mrr: dict[str, Decimal] = defaultdict(Decimal)
    in_mrr = [status for status in domain.SUBSCRIPTION_STATUSES if domain.in_mrr(status)]
    for currency, fee, count in await tx.session.execute(
        select(Subscription.currency, Subscription.monthly_fee, func.count())
        .where(Subscription.status.in_(in_mrr))
        .group_by(Subscription.currency, Subscription.monthly_fee)
    ):
        mrr[currency] += fee * count
    receivables: dict[str, Decimal] = defaultdict(Decimal)
    open_invoices = Invoice.status == "open"
    for currency, amount, paid, credited, count in await tx.session.execute(
        select(Invoice.currency, Invoice.amount, Invoice.amount_paid, Invoice.amount_credited, func.count())
        .where(open_invoices)
        .group_by(Invoice.currency, Invoice.amount, Invoice.amount_paid, Invoice.amount_credited)
    ):
        receivables[currency] += domain.amount_open(amount, paid, credited) * count
    overdue = await tx.session.scalar(select(func.count()).where(open_invoices, Invoice.due_at < now)) or 0
    invoiced: dict[str, Decimal] = defaultdict(Decimal)
    for currency, amount, count in await tx.session.execute(
        select(Invoice.currency, Invoice.amount, func.count())
        .where(Invoice.status != "void", Invoice.issued_at >= now - timedelta(days=window))
        .group_by(Invoice.currency, Invoice.amount)
    ):
        invoiced[currency] += amount * count
    dso: dict[str, Decimal] = {}
    for currency, amount in invoiced.items():
        if amount > 0:
            # receivables[currency] also lists a currency invoiced lately with nothing open (at 0).
            dso[currency] = domain.days_sales_outstanding(
                receivables=receivables[currency], invoiced=amount, window_days=window
            )
    dunning = {
        state: count
        for state, count in await tx.session.execute(
            select(DunningCase.state, func.count()).where(DunningCase.open.is_(True)).group_by(DunningCase.state)
        )
        if state is not None
    }
    leaked = await projects.leaked_revenue(tx, ctx)
    return {
        "mrr": {c: quantize(v) for c, v in mrr.items()},
        "subscriptions": dict(statuses),
        "receivables": {c: quantize(v) for c, v in receivables.items()},
        "invoices_overdue": overdue,
        "days_sales_outstanding": dso,
        "dunning": dunning,
        "leaked_revenue": leaked.totals,
    }


async def refresh_gauges(tx: UnitOfWork, ctx: Billing) -> dict[str, Any]:
    """Recompute the summary and set the gauges from it; returns the figures."""
    figures = await summary(tx, ctx)
    m = ctx.metrics
    for gauge in (m.mrr, m.subscriptions, m.receivables, m.dunning, m.dso, m.leaked):
        gauge.clear()
    for currency, value in figures["mrr"].items():
        m.mrr.labels(currency).set(float(value))
    for status, count in figures["subscriptions"].items():
        m.subscriptions.labels(status).set(count)
    for currency, value in figures["receivables"].items():
        m.receivables.labels(currency).set(float(value))
    m.overdue.set(figures["invoices_overdue"])
    for state, count in figures["dunning"].items():
        m.dunning.labels(state).set(count)
    for currency, value in figures["days_sales_outstanding"].items():
        m.dso.labels(currency).set(float(value))
    for currency, value in figures["leaked_revenue"].items():
        m.leaked.labels(currency).set(float(value))
    return figures

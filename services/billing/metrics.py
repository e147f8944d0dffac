"""Billing's Prometheus metrics, counted from the events a transaction committed.

Counting on commit (not where the handler runs) keeps the figures true when a batch rolls
back and is applied again one event at a time: only what was committed is counted, once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import event

from shared.events import Envelope
from shared.uow import UnitOfWork

_WATCHED = "billing_metrics_watched"


class BillingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = {"registry": registry}
        self.invoices_issued = Counter(
            "clientflow_billing_invoices_issued_total", "Invoices issued, by kind", ["kind"], **labels
        )
        self.payments = Counter(
            "clientflow_billing_payments_total", "Payments received, by method", ["method"], **labels
        )
        # Prometheus samples are floats; the money itself stays Decimal in the database.
        self.revenue_received = Counter(
            "clientflow_billing_revenue_received_total",
            "Money received from clients, by currency (major units)",
            ["currency"],
            **labels,
        )
        self.deposits_cleared = Counter(
            "clientflow_billing_deposits_cleared_total", "Deposits fully paid", **labels
        )

    def watch(self, tx: UnitOfWork) -> None:
        """Count what ``tx`` emits, once it has committed (a rollback counts nothing)."""
        sync_session = tx.session.sync_session
        if sync_session.info.get(_WATCHED):
            return
        sync_session.info[_WATCHED] = True

        def on_commit(_session: Any) -> None:
            for emitted in tx.emitted:
                self.count(emitted)

        event.listen(sync_session, "after_commit", on_commit, once=True)

    def count(self, emitted: Envelope) -> None:
        data = emitted.data
        match emitted.type:
            case "invoice.issued":
                self.invoices_issued.labels(data["kind"]).inc()
            case "payment.succeeded":
                self.payments.labels(data["method"]).inc()
                self.revenue_received.labels(data["currency"]).inc(float(Decimal(data["amount"])))
            case "deposit.cleared":
                self.deposits_cleared.inc()

"""Billing's Prometheus metrics.

Counters are counted from the events a transaction committed (``watch``) or from an
after-commit hook: counting on commit keeps the figures true when a batch rolls back and is
applied again one event at a time. Gauges (MRR, overdue, dunning states, DSO, leaked revenue)
are recomputed from the database by the report job (``services.billing.reports``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
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
        self.revenue_invoiced = Counter(
            "clientflow_billing_revenue_invoiced_total", "Amounts invoiced, by currency (major units)", ["currency"], **labels
        )
        self.invoices_paid = Counter(
            "clientflow_billing_invoices_paid_total", "Invoices fully paid", **labels
        )
        self.invoices_overdue_events = Counter(
            "clientflow_billing_invoices_overdue_total", "Invoices that became overdue", **labels
        )
        self.payments = Counter(
            "clientflow_billing_payments_total", "Payments received, by method", ["method"], **labels
        )
        self.payment_failures = Counter(
            "clientflow_billing_payment_failures_total", "Card payments declined, by kind", ["decline"], **labels
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
        self.credit_notes = Counter(
            "clientflow_billing_credit_notes_total", "Credit notes issued, by currency (major units)", ["currency"], **labels
        )
        self.refunded = Counter(
            "clientflow_billing_refunded_total", "Money refunded, by currency (major units)", ["currency"], **labels
        )
        self.dunning_transitions = Counter(
            "clientflow_billing_dunning_transitions_total", "Dunning state changes, by new state", ["to_state"], **labels
        )
        self.mrr_movements = Counter(
            "clientflow_billing_mrr_movement_total",
            "MRR moved, by movement (new, expansion, contraction, churn, paused, resumed) and currency",
            ["movement", "currency"],
            **labels,
        )
        self.change_requests = Counter(
            "clientflow_billing_change_requests_total", "Change requests, by outcome", ["outcome"], **labels
        )
        self.webhooks = Counter(
            "clientflow_billing_webhooks_total", "Payment webhooks, by outcome", ["outcome"], **labels
        )
        self.mrr = Gauge("clientflow_billing_mrr", "Monthly recurring revenue of active subscriptions", ["currency"], **labels)
        self.subscriptions = Gauge("clientflow_billing_subscriptions", "Subscriptions by status", ["status"], **labels)
        self.overdue = Gauge("clientflow_billing_overdue_invoices", "Open invoices past their due date", **labels)
        self.receivables = Gauge(
            "clientflow_billing_receivables", "Open amounts owed by clients", ["currency"], **labels
        )
        self.dunning = Gauge("clientflow_billing_dunning_cases", "Open dunning cases by state", ["state"], **labels)
        self.dso = Gauge(
            "clientflow_billing_days_sales_outstanding",
            "Days sales outstanding: receivables / amounts invoiced in the last 90 days x 90",
            ["currency"],
            **labels,
        )
        self.leaked = Gauge(
            "clientflow_billing_leaked_revenue", "Out-of-scope work never billed, by currency", ["currency"], **labels
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

    def mrr_movement(self, tx: UnitOfWork, movement: str, currency: str, amount: Decimal) -> None:
        """Count an MRR movement once ``tx`` commits."""
        if amount:
            tx.after_commit(lambda: self.mrr_movements.labels(movement, currency).inc(float(abs(amount))))

    def count(self, emitted: Envelope) -> None:
        data = emitted.data
        match emitted.type:
            case "invoice.issued":
                self.invoices_issued.labels(data["kind"]).inc()
                self.revenue_invoiced.labels(data["currency"]).inc(float(Decimal(data["amount"])))
            case "payment.succeeded":
                self.payments.labels(data["method"]).inc()
                if data["method"] != "credit_balance":  # credit spent is not new money
                    self.revenue_received.labels(data["currency"]).inc(float(Decimal(data["amount"])))
                if data.get("invoice_paid") and Decimal(data.get("applied") or data["amount"]) > 0:
                    self.invoices_paid.inc()
            case "payment.failed":
                self.payment_failures.labels("hard" if data.get("hard_decline") else "soft").inc()
            case "deposit.cleared":
                self.deposits_cleared.inc()
            case "invoice.overdue":
                self.invoices_overdue_events.inc()
            case "dunning.state_changed":
                self.dunning_transitions.labels(data["to_state"]).inc()
            case "credit_note.issued":
                self.credit_notes.labels(data["currency"]).inc(float(Decimal(data["amount"])))
                if Decimal(data["refunded"]) > 0:
                    self.refunded.labels(data["currency"]).inc(float(Decimal(data["refunded"])))

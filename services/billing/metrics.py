"""Billing's Prometheus metrics.

Counters are counted after commit, the one way: from every event a committed transaction
emitted (``count``, registered once with ``UnitOfWorkFactory.count_emitted`` by the
composition root, whichever path emitted it), and from ``tx.after_commit`` for the counts
that no event carries. Counting on commit keeps the figures true when a batch rolls back and
is applied again one event at a time. Gauges (MRR, overdue, dunning states, DSO, leaked revenue)
are recomputed from the database by the report job (``services.billing.reports``).
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.events import Envelope
from shared.uow import UnitOfWork


class BillingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.invoices_issued = Counter(
            "clientflow_billing_invoices_issued_total", "Invoices issued, by kind", ["kind"], registry=registry
        )
        self.revenue_invoiced = Counter(
            "clientflow_billing_revenue_invoiced_total",
            "Amounts invoiced, by currency (major units)",
            ["currency"],
            registry=registry,
        )
        self.invoices_paid = Counter("clientflow_billing_invoices_paid_total", "Invoices fully paid", registry=registry)
        self.invoices_overdue_events = Counter(
            "clientflow_billing_invoices_overdue_total", "Invoices that became overdue", registry=registry
        )
        self.payments = Counter(
            "clientflow_billing_payments_total", "Payments received, by method", ["method"], registry=registry
        )
        self.payment_failures = Counter(
            "clientflow_billing_payment_failures_total",
            "Card payments declined, by kind",
            ["decline"],
            registry=registry,
        )
        # Prometheus samples are floats; the money itself stays Decimal in the database.
        self.revenue_received = Counter(
            "clientflow_billing_revenue_received_total",
            "Money received from clients, by currency (major units)",
            ["currency"],
            registry=registry,
        )
        self.deposits_cleared = Counter(
            "clientflow_billing_deposits_cleared_total", "Deposits fully paid", registry=registry
        )
        self.credit_notes = Counter(
            "clientflow_billing_credit_notes_total",
            "Credit notes issued, by currency (major units)",
            ["currency"],
            registry=registry,
        )
        self.refunded = Counter(
            "clientflow_billing_refunded_total",
            "Money refunded, by currency (major units)",
            ["currency"],
            registry=registry,
        )
        self.dunning_transitions = Counter(
            "clientflow_billing_dunning_transitions_total",
            "Dunning state changes, by new state",
            ["to_state"],
            registry=registry,
        )
        self.mrr_movements = Counter(
            "clientflow_billing_mrr_movement_total",
            "MRR moved, by movement (new, expansion, contraction, churn, paused, resumed) and currency",
            ["movement", "currency"],
            registry=registry,
        )
        self.change_requests = Counter(
            "clientflow_billing_change_requests_total", "Change requests, by outcome", ["outcome"], registry=registry
        )
        self.written_off = Counter(
            "clientflow_billing_written_off_total",
            "Won projects' worth written off as a loss (worth minus paid), by currency and channel (major units)",
            ["currency", "channel"],
            registry=registry,
        )
        self.webhooks = Counter(
            "clientflow_billing_webhooks_total", "Payment webhooks, by outcome", ["outcome"], registry=registry
        )
        self.mrr = Gauge(
            "clientflow_billing_mrr",
            "Monthly recurring revenue of active subscriptions",
            ["currency"],
            registry=registry,
        )
        self.subscriptions = Gauge(
            "clientflow_billing_subscriptions", "Subscriptions by status", ["status"], registry=registry
        )
        self.overdue = Gauge(
            "clientflow_billing_overdue_invoices", "Open invoices past their due date", registry=registry
        )
        self.receivables = Gauge(
            "clientflow_billing_receivables", "Open amounts owed by clients", ["currency"], registry=registry
        )
        self.dunning = Gauge(
            "clientflow_billing_dunning_cases", "Open dunning cases by state", ["state"], registry=registry
        )
        self.dso = Gauge(
            "clientflow_billing_days_sales_outstanding",
            "Days sales outstanding: receivables / amounts invoiced in the last BILLING_DSO_DAYS (90) days x those days",
            ["currency"],
            registry=registry,
        )
        self.leaked = Gauge(
            "clientflow_billing_leaked_revenue",
            "Out-of-scope work never billed, by currency",
            ["currency"],
            registry=registry,
        )

    def mrr_movement(self, tx: UnitOfWork, *, movement: str, currency: str, amount: Decimal) -> None:
        """Count an MRR movement once ``tx`` commits: the movements no event carries whole
        (churn needs the status before, a pause or resume carries no fee, a scheduled price
        takes effect without an event). ``new`` is counted from ``subscription.started``."""
        if amount:
            tx.after_commit(lambda: self.mrr_movements.labels(movement, currency).inc(float(abs(amount))))

    def count(self, emitted: Envelope) -> None:
        """Count one event a transaction committed."""
        data = emitted.data
        match emitted.type:
            case "invoice.issued":
                self.invoices_issued.labels(data["kind"]).inc()
                if data["kind"] == "change_order":  # only an approved change order is invoiced so
                    self.change_requests.labels("invoiced").inc()
                self.revenue_invoiced.labels(data["currency"]).inc(float(Decimal(data["amount"])))
            case "payment.succeeded":
                self.payments.labels(data["method"]).inc()
                if data["method"] != "credit_balance":  # credit spent is not new money
                    self.revenue_received.labels(data["currency"]).inc(float(Decimal(data["amount"])))
                if data.get("invoice_paid") and Decimal(data.get("applied") or data["amount"]) > 0:
                    self.invoices_paid.inc()
            case "payment.failed":
                self.payment_failures.labels("hard" if data.get("hard_decline") else "soft").inc()
            case "subscription.started":
                fee = Decimal(data["monthly_fee"])
                if fee:
                    self.mrr_movements.labels("new", data["currency"]).inc(float(abs(fee)))
            case "deposit.cleared":
                self.deposits_cleared.inc()
            case "invoice.overdue":
                self.invoices_overdue_events.inc()
            case "dunning.state_changed":
                self.dunning_transitions.labels(data["to_state"]).inc()
            case "deal.written_off":
                # "unknown" as write_offs.UNKNOWN_CHANNEL (not imported: it would import this module back).
                self.written_off.labels(data["currency"], data.get("channel") or "unknown").inc(
                    float(Decimal(data["amount"]))
                )
            case "credit_note.issued":
                self.credit_notes.labels(data["currency"]).inc(float(Decimal(data["amount"])))
                if Decimal(data["refunded"]) > 0:
                    self.refunded.labels(data["currency"]).inc(float(Decimal(data["refunded"])))

"""Nurture's own Prometheus metrics (the plumbing ones come from shared.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class NurtureMetrics:
    """What the sender did: emails out, emails held back, the queue of due steps."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = {"registry": registry}
        self.sent = Counter(
            "clientflow_nurture_emails_sent_total",
            "Emails handed to the transport and recorded",
            ["sequence", "step", "category"],
            **labels,
        )
        self.suppressed = Counter(
            "clientflow_nurture_emails_suppressed_total",
            "Due steps closed without an email (no_consent, no_address, invalid_address)",
            ["reason"],
            **labels,
        )
        self.send_failures = Counter(
            "clientflow_nurture_send_failures_total", "Sends the transport refused (retried later)", **labels
        )
        self.queue_depth = Gauge(
            "clientflow_nurture_queue_depth", "Pending steps already due (held by takeovers included)", **labels
        )

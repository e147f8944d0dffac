"""Nurture's own Prometheus metrics (the plumbing ones come from shared.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NurtureMetrics:
    """What the sender did and how people answered: by sequence and step where that applies."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = {"registry": registry}
        by_step = ["sequence", "step"]
        self.sent = Counter(
            "clientflow_nurture_emails_sent_total",
            "Emails handed to the transport and recorded",
            ["sequence", "step", "category"],
            **labels,
        )
        self.opened = Counter(
            "clientflow_nurture_emails_opened_total", "Emails opened (first open of each)", by_step, **labels
        )
        self.clicked = Counter("clientflow_nurture_emails_clicked_total", "Tracked links followed", by_step, **labels)
        self.bounced = Counter("clientflow_nurture_emails_bounced_total", "Bounces recorded", by_step, **labels)
        self.unsubscribed = Counter(
            "clientflow_nurture_unsubscribed_total", "Unsubscribes, by the email that carried the link", by_step,
            **labels,
        )
        self.suppressed = Counter(
            "clientflow_nurture_emails_suppressed_total",
            "Due steps closed without an email (no_consent, no_address, invalid_address, bounced)",
            ["reason"],
            **labels,
        )
        self.deferred = Counter(
            "clientflow_nurture_steps_deferred_total", "Due steps moved later (quiet_hours, frequency_cap)",
            ["reason"], **labels,
        )
        self.skipped = Counter(
            "clientflow_nurture_steps_skipped_total", "Steps whose condition did not hold", **labels
        )
        self.send_failures = Counter(
            "clientflow_nurture_send_failures_total", "Sends the transport refused (retried later)", **labels
        )
        self.send_gave_up = Counter(
            "clientflow_nurture_send_gave_up_total", "Steps that failed every attempt", **labels
        )
        self.queue_depth = Gauge(
            "clientflow_nurture_queue_depth", "Pending steps already due (held by takeovers included)", **labels
        )
        self.send_latency = Histogram(
            "clientflow_nurture_send_latency_seconds",
            "From when a step was due (business time) to its email being accepted",
            buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400),
            **labels,
        )
        self.feedback = Counter(
            "clientflow_nurture_feedback_total", "Survey answers", ["survey", "complaint"], **labels
        )
        self.complaints = Counter(
            "clientflow_nurture_complaints_total", "Answers flagged as complaints (welcome, never suppressed)",
            **labels,
        )
        self.replies = Counter("clientflow_nurture_replies_total", "Inbound replies recorded", **labels)
        self.tasks = Counter("clientflow_nurture_tasks_total", "Tasks made for people", ["kind"], **labels)

"""Nurture's own Prometheus metrics (the plumbing ones come from shared.metrics).

Everything is counted once its transaction committed, whichever path (HTTP, consumer, the
sender) did it: what an emitted event says through ``count_event`` (registered with
``UnitOfWorkFactory.count_emitted``), the rest through ``tx.after_commit`` where it happens.
The gauges are read back from the database (the queue depth by the sender's pass, the tasks
when scraped and now and then).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.events import Envelope, TaskKind


class NurtureMetrics:
    """What the sender did and how people answered: by sequence and step where that applies."""

    def __init__(self, registry: CollectorRegistry) -> None:
        by_step = ["sequence", "step"]
        self.sent = Counter(
            "clientflow_nurture_emails_sent_total",
            "Emails handed to the transport and recorded",
            ["sequence", "step", "category"],
            registry=registry,
        )
        self.opened = Counter(
            "clientflow_nurture_emails_opened_total", "Emails opened (first open of each)", by_step, registry=registry
        )
        self.clicked = Counter(
            "clientflow_nurture_emails_clicked_total", "Tracked links followed", by_step, registry=registry
        )
        self.bounced = Counter(
            "clientflow_nurture_emails_bounced_total", "Bounces recorded", by_step, registry=registry
        )
        self.unsubscribed = Counter(
            "clientflow_nurture_unsubscribed_total",
            "Unsubscribes, by the email that carried the link",
            by_step,
            registry=registry,
        )
        self.suppressed = Counter(
            "clientflow_nurture_emails_suppressed_total",
            "Due steps closed without an email (no_consent, no_address, invalid_address, bounced)",
            ["reason"],
            registry=registry,
        )
        self.deferred = Counter(
            "clientflow_nurture_steps_deferred_total",
            "Due steps moved later (quiet_hours, frequency_cap)",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "clientflow_nurture_steps_skipped_total", "Steps whose condition did not hold", registry=registry
        )
        self.send_failures = Counter(
            "clientflow_nurture_send_failures_total", "Sends the transport refused (retried later)", registry=registry
        )
        self.send_gave_up = Counter(
            "clientflow_nurture_send_gave_up_total", "Steps that failed every attempt", registry=registry
        )
        self.queue_depth = Gauge(
            "clientflow_nurture_queue_depth",
            "Pending steps already due (held by takeovers included); NaN until the sender's first pass counts them",
            registry=registry,
        )
        self.queue_depth.set(float("nan"))  # unknown, not empty: a check waiting for 0 must not pass at start-up
        self.send_latency = Histogram(
            "clientflow_nurture_send_latency_seconds",
            "From when a step was due (business time) to its email being accepted",
            buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400),
            registry=registry,
        )
        self.feedback = Counter(
            "clientflow_nurture_feedback_total", "Survey answers", ["survey", "complaint"], registry=registry
        )
        self.complaints = Counter(
            "clientflow_nurture_complaints_total",
            "Answers flagged as complaints (welcome, never suppressed)",
            registry=registry,
        )
        self.replies = Counter("clientflow_nurture_replies_total", "Inbound replies recorded", registry=registry)
        self.tasks = Counter("clientflow_nurture_tasks_total", "Tasks made for people", ["kind"], registry=registry)
        self.tasks_open = Gauge(
            "clientflow_nurture_tasks_open",
            "Tasks open now (snoozes that ran out included), by kind",
            ["kind"],
            registry=registry,
        )
        self.tasks_overdue = Gauge(
            "clientflow_nurture_tasks_overdue",
            "Open tasks past their due date (business clock), by kind",
            ["kind"],
            registry=registry,
        )
        self._task_kinds: set[str] = set(get_args(TaskKind))
        self.show_tasks({})

    def show_tasks(self, counts: Mapping[str, tuple[int, int]]) -> None:
        """Set the task gauges to ``counts`` (open, overdue by kind); a kind not in it has none."""
        self._task_kinds |= set(counts)
        for kind in self._task_kinds:
            open_, overdue = counts.get(kind, (0, 0))
            self.tasks_open.labels(kind).set(open_)
            self.tasks_overdue.labels(kind).set(overdue)

    def count_event(self, event: Envelope) -> None:
        """Count a committed event that says all its metric needs: an email sent, and a survey
        answered (an answer replacing an earlier one is not counted again)."""
        data = event.data
        if event.type == "email.sent":
            self.sent.labels(data["sequence"], str(data["step"]), data["category"]).inc()
        elif event.type == "feedback.received" and not data.get("replaces"):
            complaint = bool(data.get("complaint"))
            self.feedback.labels(data["survey"], str(complaint).lower()).inc()
            if complaint:
                self.complaints.inc()

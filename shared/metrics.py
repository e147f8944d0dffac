"""Metrics every service publishes; each service gets its own registry (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PlumbingMetrics:
    """Consumer, outbox and HTTP figures that ops dashboards and alerts rely on."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self.events_consumed = Counter(
            "clientflow_events_consumed_total",
            "Events read from a topic, by outcome (applied, duplicate, ignored, unknown_type, dead_lettered)",
            ["service", "topic", "type", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "clientflow_dead_letters_total",
            "Messages sent to a dead-letter topic",
            ["service", "topic", "reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "clientflow_consumer_batch_seconds",
            "Time to apply one batch of events in one transaction",
            ["service"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.events_published = Counter(
            "clientflow_events_published_total",
            "Events published by the outbox relay",
            ["service", "topic", "type"],
            registry=registry,
        )
        # Crypto-shredding (shared.crypto): events read whose person's key is gone (destroyed by an
        # erasure, or lost: still unknown after CLIENTFLOW_KEY_WAIT_S), applied without their
        # personal fields; and batches read again because a key had not arrived yet.
        self.events_shredded = Counter(
            "clientflow_events_shredded_total",
            "Sealed events read without their person's key (reason: destroyed or lost), applied as erased",
            ["service", "reason"],
            registry=registry,
        )
        self.key_waits = Counter(
            "clientflow_key_waits_total",
            "Batches read again because a person's key had not reached this service yet",
            ["service"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "clientflow_outbox_backlog", "Outbox rows not yet published", ["service"], registry=registry
        )
        self.outbox_oldest_age = Gauge(
            "clientflow_outbox_oldest_unsent_seconds",
            "Age of the oldest outbox row not yet published",
            ["service"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "clientflow_consumer_lag",
            "Messages on a partition not yet consumed by the service's group (high watermark - position)",
            ["service", "topic", "partition"],
            registry=registry,
        )
        self.relay_errors = Counter(
            "clientflow_relay_errors_total", "Failed outbox publish attempts", ["service"], registry=registry
        )
        self.http_requests = Counter(
            "clientflow_http_requests_total",
            "HTTP requests by route and status",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.http_shed = Counter(
            "clientflow_http_shed_total",
            "Writes refused at once with 503 and Retry-After because as many were already in progress",
            ["service"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "clientflow_http_request_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.auth_failures = Counter(
            "clientflow_auth_failures_total",
            "Requests refused for their token, by reason (missing, invalid, expired, revoked, disabled, oidc, "
            "forbidden: a role that may not, locked: 429 after repeated bad tokens from one address)",
            ["service", "reason"],
            registry=registry,
        )
        self.audit_rows = Counter(
            "clientflow_audit_rows_total",
            "Rows recorded in the audit trail, by outcome",
            ["service", "outcome"],
            registry=registry,
        )
        # How late the event loop runs what it was asked to run: a request, a consumed batch or
        # a job that holds the loop shows here before health checks time out.
        self.loop_lag = Histogram(
            "clientflow_event_loop_lag_seconds",
            "How late a 100 ms timer on the service's event loop fires (the loop was busy meanwhile)",
            ["service"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        # Scheduled jobs (shared.jobs): a record a job fails on is counted, kept with its
        # reason and retried with backoff; the job goes on with the others.
        self.job_failures = Counter(
            "clientflow_job_failures_total",
            "Failed attempts of a scheduled job on one record (the record is kept in job_failures with "
            "its reason and retried with backoff; the rest of the pass goes on)",
            ["service", "job"],
            registry=registry,
        )
        self.job_given_up = Gauge(
            "clientflow_job_records_given_up",
            "Records a scheduled job gave up on after its last attempt (rows of job_failures with given_up)",
            ["service", "job"],
            registry=registry,
        )
        # Retention of data (shared/data_retention.py, services/leads/data_retention.py): what the
        # scheduled jobs erased or purged because it was kept long enough, and what they failed on.
        self.data_retention_purged = Counter(
            "clientflow_data_retention_purged_total",
            "Rows deleted because their retention ended (what: audit_rows)",
            ["service", "what"],
            registry=registry,
        )
        self.data_retention_erased = Counter(
            "clientflow_data_retention_erased_total",
            "People erased because their retention ended (what: disqualified, lost), as DELETE /leads/{id} does",
            ["service", "what"],
            registry=registry,
        )
        self.data_retention_errors = Counter(
            "clientflow_data_retention_errors_total",
            "Records a retention job failed on (kept in job_failures and tried again; the rest went on)",
            ["service", "what"],
            registry=registry,
        )
        self.data_retention_purged.labels(service, "audit_rows")

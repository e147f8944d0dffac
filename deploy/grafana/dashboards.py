"""Dashboards as code: `python deploy/grafana/dashboards.py` writes deploy/grafana/dashboards/*.json.

Panels are PromQL over the services' real metrics and the recording rules in
deploy/prometheus/rules.yml; tests check that every metric named here exists."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def panel(title: str, *exprs: tuple[str, str], kind: str = "timeseries", unit: str = "short", width: int = 12) -> dict:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(65 + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(exprs)
        ],
        "_width": width,
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    x = y = 0
    laid = []
    for i, p in enumerate(panels, start=1):
        width = p.pop("_width")
        if x + width > 24:
            x, y = 0, y + 8
        laid.append({**p, "id": i, "gridPos": {"x": x, "y": y, "w": width, "h": 8}})
        x += width
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["clientflow"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "panels": laid,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


OPERATIONS = dashboard(
    "clientflow-operations",
    "Clientflow: operations",
    "Per service: consumed and published rates, handler latency, consumer lag, outbox, dead letters, HTTP.",
    [
        panel("Events consumed per second, by outcome", ("sum by (service, outcome) (clientflow:events_consumed:rate5m)", "{{service}} {{outcome}}")),
        panel("Events published per second", ("sum by (service, topic) (clientflow:events_published:rate5m)", "{{service}} -> {{topic}}")),
        panel("Batch handling latency p95", ("clientflow:batch_seconds:p95_5m", "{{service}}"), unit="s"),
        panel("Consumer lag (worst partition)", ("clientflow:consumer_lag:max", "{{service}} {{topic}}")),
        panel("Outbox backlog", ("clientflow:outbox_backlog:max", "{{service}}")),
        panel("Oldest unpublished outbox row", ("max by (service) (clientflow_outbox_oldest_unsent_seconds)", "{{service}}"), unit="s"),
        panel("Dead letters (10 min)", ("clientflow:dead_letters:increase10m", "{{service}} {{topic}} {{reason}}")),
        panel("Relay publish errors per second", ("sum by (service) (rate(clientflow_relay_errors_total[5m]))", "{{service}}")),
        panel("HTTP requests per second", ("sum by (service, status) (clientflow:http_requests:rate5m)", "{{service}} {{status}}")),
        panel("HTTP 5xx ratio", ("clientflow:http_error_ratio:rate5m", "{{service}}"), unit="percentunit"),
        panel("HTTP latency p95", ("clientflow:http_latency:p95_5m", "{{service}}"), unit="s"),
        panel("Instances up", ('sum by (job) (up{job=~"leads|nurture|billing|retention"})', "{{job}}"), kind="stat"),
    ],
)

DASHBOARDS = {"operations": OPERATIONS}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, board in DASHBOARDS.items():
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

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
    "Per service: consumed and published rates, handler latency, consumer lag, outbox, dead letters, HTTP; "
    "tasks open and overdue.",
    [
        panel(
            "Events consumed per second, by outcome",
            ("sum by (service, outcome) (clientflow:events_consumed:rate5m)", "{{service}} {{outcome}}"),
        ),
        panel(
            "Events published per second",
            ("sum by (service, topic) (clientflow:events_published:rate5m)", "{{service}} -> {{topic}}"),
        ),
        panel("Batch handling latency p95", ("clientflow:batch_seconds:p95_5m", "{{service}}"), unit="s"),
        panel("Consumer lag (worst partition)", ("clientflow:consumer_lag:max", "{{service}} {{topic}}")),
        panel("Outbox backlog", ("clientflow:outbox_backlog:max", "{{service}}")),
        panel(
            "Oldest unpublished outbox row",
            ("max by (service) (clientflow_outbox_oldest_unsent_seconds)", "{{service}}"),
            unit="s",
        ),
        panel("Dead letters (10 min)", ("clientflow:dead_letters:increase10m", "{{service}} {{topic}} {{reason}}")),
        panel(
            "Relay publish errors per second",
            ("sum by (service) (rate(clientflow_relay_errors_total[5m]))", "{{service}}"),
        ),
        panel(
            "HTTP requests per second",
            ("sum by (service, status) (clientflow:http_requests:rate5m)", "{{service}} {{status}}"),
        ),
        panel("HTTP 5xx ratio", ("clientflow:http_error_ratio:rate5m", "{{service}}"), unit="percentunit"),
        panel("HTTP latency p95", ("clientflow:http_latency:p95_5m", "{{service}}"), unit="s"),
        panel("Instances up", ('sum by (job) (up{job=~"leads|nurture|billing|retention"})', "{{job}}"), kind="stat"),
        panel(
            "Scheduled jobs: records failing (per second) and given up",
            ("sum by (service, job) (rate(clientflow_job_failures_total[5m]))", "{{service}} {{job}} failing"),
            ("max by (service, job) (clientflow_job_records_given_up)", "{{service}} {{job}} given up"),
        ),
        panel(
            "Event-loop lag p99 (a loop held by one request or batch)",
            (
                "histogram_quantile(0.99, sum by (service, le) (rate(clientflow_event_loop_lag_seconds_bucket[5m])))",
                "{{service}}",
            ),
            unit="s",
        ),
        # Every nurture instance reads the same table: max, not sum, across them.
        panel(
            "Tasks open and overdue",
            ("max by (kind) (clientflow_nurture_tasks_open)", "{{kind}} open"),
            ("max by (kind) (clientflow_nurture_tasks_overdue)", "{{kind}} overdue"),
        ),
    ],
)

ECON = 'clientflow_retention_economics{{figure="{figure}", channel{match}}}'


def econ(figure: str, channel: str = '!="all"') -> str:
    return ECON.format(figure=figure, match=channel)


BUSINESS = dashboard(
    "clientflow-business",
    "Clientflow: business",
    "Funnel and conversion by channel, revenue and MRR movements, NRR and GRR, churn, dunning, tiers and the "
    "let-go list, CAC and LTV by channel, leaked revenue, ROI and lead cost by channel, the year's revenue "
    "retention, client lifetime, the leak against its goal and what included hours are worth.",
    [
        panel("Funnel: leads in each stage", ("clientflow_leads_stage", "{{stage}}"), kind="bargauge", width=8),
        panel(
            "Leads captured per day, by channel",
            ("sum by (channel) (increase(clientflow_leads_captured_total[1d]))", "{{channel}}"),
            width=8,
        ),
        panel(
            "Conversion lead -> client, by channel",
            (econ("conversion_action"), "{{channel}}"),
            unit="percentunit",
            width=8,
        ),
        panel(
            "Deals won and lost (7 days)",
            ("sum by (outcome) (increase(clientflow_leads_deals_total[7d]))", "{{outcome}}"),
            width=8,
        ),
        panel(
            "Revenue received (30 days)",
            ("sum by (currency) (increase(clientflow_billing_revenue_received_total[30d]))", "{{currency}}"),
            width=8,
        ),
        panel("MRR", ("sum by (currency) (clientflow_billing_mrr)", "{{currency}}"), width=8),
        panel(
            "MRR movements (trailing period)",
            ('sum by (kind, currency) (clientflow_retention_mrr_movements{channel="all"})', "{{kind}} {{currency}}"),
            width=12,
        ),
        panel(
            "NRR and GRR", (econ("nrr", '="all"'), "NRR"), (econ("grr", '="all"'), "GRR"), unit="percentunit", width=12
        ),
        panel(
            "Cancellations per day, by outcome",
            ("sum by (outcome) (increase(clientflow_retention_cancellations_total[1d]))", "{{outcome}}"),
            width=8,
        ),
        panel(
            "Logo and revenue churn",
            (econ("logo_churn", '="all"'), "logo"),
            (econ("revenue_churn", '="all"'), "revenue"),
            unit="percentunit",
            width=8,
        ),
        panel(
            "Dunning cases by state",
            ("sum by (state) (clientflow_billing_dunning_cases)", "{{state}}"),
            kind="bargauge",
            width=8,
        ),
        panel("Clients by tier", ("clientflow_retention_clients_by_tier", "{{tier}}"), kind="bargauge", width=8),
        panel(
            "Let-go list (fire clients)",
            ('clientflow_retention_clients_by_tier{tier="fire"}', "fire"),
            kind="stat",
            width=4,
        ),
        panel(
            "Share of fire clients",
            (econ("fire_share", '="all"'), "fire share"),
            kind="stat",
            unit="percentunit",
            width=4,
        ),
        panel(
            "Clients by health band",
            ("clientflow_retention_clients_by_health_band", "{{band}}"),
            kind="bargauge",
            width=8,
        ),
        panel("CAC by channel", (econ("cac"), "{{channel}} {{currency}}"), width=8),
        panel("LTV by channel", (econ("ltv"), "{{channel}} {{currency}}"), width=8),
        panel("LTV:CAC by channel", (econ("ltv_cac"), "{{channel}}"), width=8),
        panel(
            "Leaked revenue (out of scope, never billed)",
            ("sum by (currency) (clientflow_billing_leaked_revenue)", "{{currency}}"),
            kind="stat",
            width=12,
        ),
        panel("Days sales outstanding", ("clientflow_billing_days_sales_outstanding", "{{currency}}"), width=12),
        panel(
            "ROI by channel (first-year revenue of new clients vs spend)",
            (econ("roi"), "{{channel}}"),
            unit="percentunit",
            width=8,
        ),
        panel(
            "Cost per lead and per qualified lead",
            (econ("cost_per_lead"), "{{channel}} per lead"),
            (econ("cost_per_qualified_lead"), "{{channel}} per qualified lead"),
            width=8,
        ),
        panel(
            "Revenue retention over a year (goal about 130%)",
            (econ("yearly_revenue_retention", '="all"'), "retention year"),
            unit="percentunit",
            width=8,
        ),
        panel(
            "Median client lifetime (months), by channel",
            (econ("median_lifetime_months"), "{{channel}}"),
            (econ("median_lifetime_months", '="all"'), "all"),
            width=8,
        ),
        panel(
            "Leak: clients who left unhappy (goal under 5%)",
            (econ("leak", '="all"'), "leak"),
            ("vector(0.05)", "goal"),
            unit="percentunit",
            width=8,
        ),
        panel(
            "Included hours: months longer a client stays with them",
            (econ("included_hours_months_longer", '="all"'), "months longer"),
            kind="stat",
            width=8,
        ),
    ],
)


def per_rep(title: str, expr: str, legend: str, unit: str = "short") -> dict:
    """A panel repeated for each rep the ``rep`` variable holds (one panel per person)."""
    return {**panel(title, (expr, legend), kind="stat", unit=unit, width=6), "repeat": "rep", "repeatDirection": "h"}


REP = 'rep=~"$rep"'
SALES = dashboard(
    "clientflow-sales",
    "Clientflow: sales team",
    "Each rep's month so far (GET /team/performance): leads given, won value, commission, quota attainment and "
    "median first-touch time in business hours; one panel per rep (the rep variable).",
    [
        per_rep("$rep: leads this month", f"max by (rep) (clientflow_team_rep_leads{{{REP}}})", "{{rep}}"),
        per_rep(
            "$rep: won this month", f"max by (rep, currency) (clientflow_team_rep_won_value{{{REP}}})", "{{currency}}"
        ),
        per_rep(
            "$rep: commission", f"max by (rep, currency) (clientflow_team_rep_commission{{{REP}}})", "{{currency}}"
        ),
        per_rep(
            "$rep: quota attainment",
            f"max by (rep) (clientflow_team_rep_attainment_ratio{{{REP}}})",
            "{{rep}}",
            "percentunit",
        ),
        per_rep(
            "$rep: first touch (median, business hours)",
            f"max by (rep) (clientflow_team_rep_first_touch_median_hours{{{REP}}})",
            "{{rep}}",
            "h",
        ),
        panel(
            "Tasks raised by leads per day, by kind",
            ("sum by (kind) (increase(clientflow_leads_tasks_raised_total[1d]))", "{{kind}}"),
        ),
        panel(
            "Owners given per day (pool: nobody could take the lead)",
            ("sum by (role, outcome) (increase(clientflow_leads_assigned_total[1d]))", "{{role}} {{outcome}}"),
        ),
    ],
)
SALES["templating"] = {
    "list": [
        {
            "name": "rep",
            "label": "Rep",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": "label_values(clientflow_team_rep_leads, rep)", "refId": "rep"},
            "definition": "label_values(clientflow_team_rep_leads, rep)",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "current": {"text": "All", "value": "$__all"},
        }
    ]
}

DASHBOARDS = {"operations": OPERATIONS, "business": BUSINESS, "sales": SALES}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, board in DASHBOARDS.items():
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

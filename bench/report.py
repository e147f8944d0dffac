"""bench.json, bench.md and bench.png from one run's results."""

from __future__ import annotations

import json
import math
from pathlib import Path

SERVICES = ("leads", "nurture", "billing", "retention")


def _refused(step: dict) -> str:
    """How many were refused at once (503 with Retry-After) and how fast (p99), if any."""
    count = step.get("refused") or 0
    return f"{count} (p99 {_f(step['refused_p99_ms'])} ms)" if count else "0"


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def targets(result: dict) -> list[dict]:
    """The issue's targets, each met or missed, from the figures of this run."""
    rounds = result["rounds"]
    base = rounds["1x"]
    grown = rounds.get(f"{result['config']['growth']}x")
    out = []
    for service in SERVICES:
        ratio = base["services"][service]["ratio"]
        out.append(
            {
                "target": f"{service}: backlog rate >= 30% of the raw broker round trip",
                "value": f"{ratio:.1%}",
                "met": ratio >= 0.30,
            }
        )
    at300 = next((s for s in base["latency"]["leads"] if s["offered_per_s"] == 300), None)
    if at300 is None and 300 in (base["latency"].get("skipped_loads") or []):
        out.append(
            {
                "target": "p99 POST /leads -> email.sent < 250 ms at 300 leads/s",
                "value": "not reached: a lower load already saturated",
                "met": False,
            }
        )
    if at300 is not None:
        out.append(
            {
                "target": "p99 POST /leads -> email.sent < 250 ms at 300 leads/s",
                "value": f"{_f(at300['p99_ms'])} ms ({'held' if at300['held'] else 'not held'})",
                "met": at300["held"] and at300["p99_ms"] < 250,
            }
        )
    for service in SERVICES:
        peak = max(r["memory_mb"][service] for r in rounds.values())
        out.append({"target": f"{service}: peak RSS < 150 MB", "value": f"{peak:.0f} MB", "met": peak < 150})
    if grown is not None:
        for service in SERVICES:
            change = grown["services"][service]["events_per_s"] / base["services"][service]["events_per_s"]
            out.append(
                {
                    "target": f"{service}: backlog rate with 10x history >= 80% of 1x (flat cost)",
                    "value": f"{change:.0%}",
                    "met": change >= 0.8,
                }
            )
        lowest = [base["latency"]["leads"][0], grown["latency"]["leads"][0]]
        flat = lowest[1]["p50_ms"] <= 1.25 * lowest[0]["p50_ms"] + 20
        out.append(
            {
                "target": f"p50 lead -> email at {lowest[0]['offered_per_s']:.0f}/s with 10x history within 25% (+20 ms)",
                "value": f"{_f(lowest[0]['p50_ms'])} -> {_f(lowest[1]['p50_ms'])} ms",
                "met": flat,
            }
        )
    return out


def write_json(result: dict, out: Path, *, name: str = "bench.json") -> Path:
    path = out / name
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def write_markdown(result: dict, out: Path) -> Path:
    lines = [
        "# Clientflow benchmark",
        "",
        f"Reproduce: `{result['command']}`  ",
        f"Run: {result['started_at']}, {result['duration_s']:.0f} s. "
        f"Machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"{result['machine']['memory_gb']:.1f} GB, Python {result['machine']['python']}; "
        f"broker: embedded Tansu; database: {result['config']['database']}.",
        "",
    ]
    for label, rnd in result["rounds"].items():
        db = rnd["limits"]["database"]
        lines += [
            f"## {label} history",
            "",
            f"Raw database limit: {_f(db['inserts_per_s'])} rows/s (batched inserts of {db['rows']} rows of "
            f"{db['row_bytes']} B, {db['batch']} per transaction).",
            "",
            "| service | events (measured) | events/s | raw produce/s | raw consume/s | raw round trip/s | ratio | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for service in SERVICES:
            s = rnd["services"][service]
            raw = s["raw_broker"]
            lines.append(
                f"| {service} | {s['events']} ({s['measured']}) | {_f(s['events_per_s'])} | "
                f"{_f(raw['produce_per_s'])} | {_f(raw['consume_per_s'])} | {_f(raw['round_trip_per_s'])} | "
                f"{s['ratio']:.1%} | {_f(rnd['memory_mb'][service])} |"
            )
        lines += [
            "",
            "| path | offered/s | achieved/s | sent | done | refused (503) | failed | p50 ms | p95 ms | p99 ms "
            "| p99 1st/2nd half | held |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for route, steps in (
            ("POST /leads -> email.sent", rnd["latency"]["leads"]),
            ("POST /payments -> deposit.cleared", rnd["latency"]["payments"]),
        ):
            for s in steps:
                lines.append(
                    f"| {route} | {_f(s['offered_per_s'])} | {_f(s['achieved_per_s'], 1)} | {s['sent']} | "
                    f"{s['completed']} | {_refused(s)} | {s['failed_requests']} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | "
                    f"{_f(s['p99_ms'])} | {_f(s['p99_first_half_ms'])} / {_f(s['p99_second_half_ms'])} | "
                    f"{'yes' if s['held'] else 'no'} |"
                )
        hops = rnd["latency"].get("broker_hop") or []
        if hops:
            lines += [
                "",
                "Broker floor per consumer hop (one message at a time, acks=all): "
                + "; ".join(
                    f"fetch wait {h['fetch_max_wait_ms']} ms: p50 {_f(h['p50_ms'], 1)} ms, p99 {_f(h['p99_ms'], 1)} ms"
                    for h in hops
                )
                + ".",
            ]
        skipped = rnd["latency"].get("skipped_loads") or []
        lines += [
            "",
            f"Highest load held (POST /leads): {_f(rnd['latency']['highest_held_per_s'])} leads/s."
            + (
                f" Not run, the load below already saturated: {', '.join(_f(r) for r in skipped)}/s." if skipped else ""
            ),
            "",
        ]
    lines += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in result["targets"]]
    lines += ["", "![throughput and latency against offered load](bench.png)", ""]
    path = out / "bench.md"
    path.write_text("\n".join(lines))
    return path


def write_plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (label, rnd), style in zip(result["rounds"].items(), ("-", "--"), strict=False):
        steps = rnd["latency"]["leads"]
        offered = [s["offered_per_s"] for s in steps]
        left.plot(offered, [s["achieved_per_s"] for s in steps], "o" + style, label=f"achieved ({label} history)")
        right.plot(offered, [s["p50_ms"] for s in steps], "o" + style, label=f"p50 ({label})")
        right.plot(offered, [s["p99_ms"] for s in steps], "s" + style, label=f"p99 ({label})")
    top = max(s["offered_per_s"] for r in result["rounds"].values() for s in r["latency"]["leads"])
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    left.set(xlabel="offered leads/s (POST /leads)", ylabel="leads/s reaching email.sent", title="Throughput")
    right.axhline(250, color="red", linestyle=":", label="p99 target 250 ms")
    right.set(
        xlabel="offered leads/s (POST /leads)", ylabel="ms, POST /leads -> email.sent", yscale="log", title="Latency"
    )
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Clientflow on the embedded broker, " + result["config"]["database"])
    fig.tight_layout()
    path = out / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The benchmark's arithmetic and report: percentiles, "held", targets, the three files."""

from __future__ import annotations

import json

from bench import measure, report
from bench.report import SERVICES


def _step(offered: float, p99: float, *, held: bool = True) -> dict:
    return {
        "offered_per_s": offered,
        "seconds": 10,
        "sent": int(offered * 10),
        "completed": int(offered * 10),
        "failed_requests": 0,
        "achieved_per_s": offered,
        "p50_ms": p99 / 3,
        "p95_ms": p99 / 1.5,
        "p99_ms": p99,
        "max_ms": p99,
        "p99_first_half_ms": p99,
        "p99_second_half_ms": p99,
        "p99_growing": False,
        "held": held,
    }


def _round(rate: float, rss: float) -> dict:
    raw = {
        "messages": 100,
        "message_bytes": 700,
        "produce_per_s": 4000.0,
        "consume_per_s": 4000.0,
        "round_trip_per_s": 2000.0,
    }
    return {
        "history_scale": 1,
        "limits": {"database": {"rows": 100, "row_bytes": 700, "batch": 500, "inserts_per_s": 50_000.0}},
        "services": {
            s: {
                "events": 100,
                "measured": 100,
                "events_per_s": rate,
                "seconds": 1.0,
                "publish_s": 0.1,
                "peak_rss_mb": rss,
                "raw_broker": raw,
                "ratio": rate / 2000,
            }
            for s in SERVICES
        },
        "memory_mb": dict.fromkeys(SERVICES, rss),
        "latency": {
            "leads": [_step(100, 120), _step(300, 200), _step(1000, 900, held=False)],
            "payments": [_step(30, 80)],
            "highest_held_per_s": 300,
        },
    }


def _result(base_rate: float, grown_rate: float) -> dict:
    return {
        "command": "python -m bench --quick",
        "started_at": "2026-11-30T13:00:00+00:00",
        "duration_s": 60.0,
        "machine": {"cpus": 2, "cpu_model": "test", "memory_gb": 4.0, "python": "3.11", "platform": "linux"},
        "config": {"growth": 10, "database": "sqlite"},
        "rounds": {"1x": _round(base_rate, 100.0), "10x": _round(grown_rate, 120.0)},
    }


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert measure._percentile(values, 50) == 50
    assert measure._percentile(values, 99) == 99
    assert measure._percentile([7.0], 99) == 7.0


def test_a_load_is_held_only_when_kept_up_with_and_latency_stays_bounded() -> None:
    t0 = 1000.0
    intended = {f"l{i}": t0 + i / 10 for i in range(100)}
    steady = {k: v + 0.05 for k, v in intended.items()}
    summary = measure._summary(10, 10, t0, intended, steady, 0)
    assert summary["held"] and summary["completed"] == 100
    assert 49 < summary["p99_ms"] < 51
    # Latency that keeps growing over the run: the system falls behind even if all complete.
    growing = {k: v + (v - t0) * 0.5 for k, v in intended.items()}
    behind = measure._summary(10, 10, t0, intended, growing, 0)
    assert behind["p99_growing"] and not behind["held"]
    assert behind["achieved_per_s"] < 10 * 0.95
    # A lead that never got its email is not held either.
    missing = dict(list(steady.items())[:-1])
    assert not measure._summary(10, 10, t0, intended, missing, 0)["held"]


def test_targets_flag_what_is_met_and_what_is_missed() -> None:
    targets = {t["target"]: t["met"] for t in report.targets(_result(1000.0, 500.0))}
    assert targets["leads: backlog rate >= 30% of the raw broker round trip"] is True  # 50%
    assert targets["p99 POST /leads -> email.sent < 250 ms at 300 leads/s"] is True
    assert targets["nurture: peak RSS < 150 MB"] is True
    assert targets["billing: backlog rate with 10x history >= 80% of 1x (flat cost)"] is False  # halved
    slow = {t["target"]: t["met"] for t in report.targets(_result(400.0, 400.0))}
    assert slow["retention: backlog rate >= 30% of the raw broker round trip"] is False  # 20%
    assert slow["retention: backlog rate with 10x history >= 80% of 1x (flat cost)"] is True


def test_writes_json_markdown_and_plot(tmp_path) -> None:
    result = _result(1000.0, 900.0)
    result["targets"] = report.targets(result)
    data = json.loads(report.write_json(result, tmp_path).read_text())
    assert set(data["rounds"]) == {"1x", "10x"} and data["targets"]
    markdown = report.write_markdown(result, tmp_path).read_text()
    assert "python -m bench --quick" in markdown and "| leads |" in markdown and "## Targets" in markdown
    png = report.write_plot(result, tmp_path).read_bytes()
    assert png.startswith(b"\x89PNG")

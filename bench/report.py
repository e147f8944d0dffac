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


def _failed(step: dict) -> str:
    """Failed requests and why: HTTP status, client error, or ``unsent`` (the generator had
    IN_FLIGHT requests waiting for answers for SLOT_WAIT_S, so this one never left)."""
    reasons = dict(step.get("failures") or {})
    if step.get("unsent"):
        reasons["unsent"] = step["unsent"]
    why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    return f"{step['failed_requests']} ({why})" if why else str(step["failed_requests"])


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _target(target: str, value: str, limit: str, met: bool) -> dict:
    return {"target": target, "value": value, "limit": limit, "met": met}


def _raw(figures: dict) -> str:
    raw = figures["raw_broker"]
    return f"raw broker round trip {_f(raw['round_trip_per_s'])} msg/s ({raw['message_bytes']} B, same run)"


def _hop(rnd: dict) -> str:
    hops = rnd.get("latency", {}).get("broker_hop") or []
    if not hops:
        return "-"
    hop = hops[-1]
    return f"broker hop p99 {_f(hop['p99_ms'], 1)} ms at fetch wait {hop['fetch_max_wait_ms']} ms"


def _lead_steps(rnd: dict) -> list[dict]:
    """The lead steps at a planned load (ladder and target), not the profiled or overload ones."""
    return [s for s in rnd.get("latency", {}).get("leads", []) if s.get("kind", "ladder") in ("ladder", "target")]


def _checks(step: dict) -> str:
    return f"lost {step.get('lost', 0)}, doubled {step.get('duplicates', 0)}"


def _backlog_targets(rnd: dict | None, database: str) -> list[dict]:
    out = []
    for service in SERVICES:
        name = f"{service}: backlog rate, {database}, >= 30% of the raw round trip"
        if rnd is None or "services" not in rnd:
            why = (rnd or {}).get("not_measured", "round not run")
            out.append(_target(name, f"not measured: {why}", "-", False))
            continue
        figures = rnd["services"][service]
        value = (
            f"{figures['ratio']:.1%} ({_f(figures['events_per_s'])} events/s over "
            f"{figures['measured']:,} events, {figures['seconds']:.0f} s)"
        )
        out.append(_target(name, value, _raw(figures), figures["ratio"] >= 0.30))
    return out


def _cpu_step(steps: list[dict]) -> dict | None:
    """The step CPU per lead is judged at: the highest load held, else the one completing most."""
    measured = [s for s in steps if s.get("cpu_ms_per_lead") is not None]
    held = [s for s in measured if s["held"]]
    if held:
        return max(held, key=lambda s: s["offered_per_s"])
    return max(measured, key=lambda s: s["completed"], default=None)


def targets(result: dict) -> list[dict]:
    """The issue's targets, each met or missed, with the raw limit it is compared with."""
    rounds = result["rounds"]
    config = result["config"]
    base = rounds["1x"]
    grown_label = f"{config.get('growth', 100)}x"
    grown = rounds.get(grown_label) if grown_label != "1x" else None
    out = _backlog_targets(base, "SQLite" if config.get("database") == "sqlite" else config.get("database", "?"))
    out += _backlog_targets(rounds.get("postgresql"), "PostgreSQL")

    rate, held_s = config.get("target_rate", 300), config.get("target_seconds", 60)
    name = f"POST /leads -> email.sent: p99 < 250 ms at {_f(rate)} leads/s offered, held for {_f(held_s)} s"
    steps = _lead_steps(base)
    at_target = next((s for s in steps if s.get("kind") == "target"), None)
    at_target = at_target or next((s for s in steps if s["offered_per_s"] == rate), None)
    if at_target is None:
        out.append(_target(name, "not measured: the target step did not run", _hop(base), False))
    else:
        value = (
            f"p99 {_f(at_target['p99_ms'])} ms, {_f(at_target['achieved_per_s'], 1)}/s done of "
            f"{_f(at_target['offered_per_s'])}/s over {_f(at_target['seconds'])} s, refused {at_target.get('refused', 0)}, "
            f"{_checks(at_target)}, {'held' if at_target['held'] else 'not held'}"
        )
        met = (
            at_target["held"]
            and at_target["p99_ms"] < 250
            and at_target["seconds"] >= 60
            and at_target["offered_per_s"] >= 300
        )
        out.append(_target(name, value, _hop(base), met))

    name = "POST /payments -> deposit.cleared: p99 < 250 ms at 100/s"
    payments = base.get("latency", {}).get("payments") or []
    if not payments:
        out.append(_target(name, "not measured", _hop(base), False))
    else:
        pay = payments[-1]
        value = (
            f"p99 {_f(pay['p99_ms'])} ms at {_f(pay['offered_per_s'])}/s ({pay['completed']} of {pay['sent']}, "
            f"refused {pay.get('refused') or 0}, failed {pay['failed_requests']}, "
            f"{_checks(pay)}, {'held' if pay['held'] else 'not held'})"
        )
        met = pay["held"] and pay["p99_ms"] < 250 and pay["offered_per_s"] >= 100
        out.append(_target(name, value, _hop(base), met))

    name = "CPU per lead, four services and the broker: under 6 ms"
    cpu = _cpu_step(steps)
    cpus = result.get("machine", {}).get("cpus") or 1
    if cpu is None:
        out.append(_target(name, "not measured", "-", False))
    else:
        ms = cpu["cpu_ms_per_lead"]
        value = f"{ms:.1f} ms per lead at {_f(cpu['offered_per_s'])}/s ({'held' if cpu['held'] else 'not held'})"
        limit = f"{cpus} CPUs: {_f(cpus * 1000 / ms)} leads/s if CPU were the only bound" if ms else "-"
        out.append(_target(name, value, limit, ms < 6))

    all_steps = [s for rnd in rounds.values() for s in rnd.get("latency", {}).get("leads", [])]
    all_steps += [s for rnd in rounds.values() for s in rnd.get("latency", {}).get("overload", [])]
    all_steps += [s for rnd in rounds.values() for s in rnd.get("latency", {}).get("payments", [])]
    lost = sum(s.get("lost", 0) for s in all_steps)
    doubled = sum(s.get("duplicates", 0) for s in all_steps)
    out.append(
        _target(
            "no event lost or applied twice at any load step",
            f"lost {lost}, doubled {doubled} over {len(all_steps)} steps",
            "-",
            bool(all_steps) and lost == 0 and doubled == 0,
        )
    )

    if grown is None:
        out.append(_target(f"history: {grown_label} round", "not measured: round not run", "-", False))
    else:
        seeded = grown.get("seeded") or {}
        largest: tuple[str | None, dict] = max(
            seeded.items(), key=lambda kv: kv[1].get("largest_rows", 0), default=(None, {})
        )
        rows = largest[1].get("largest_rows", 0)
        out.append(
            _target(
                f"history: at least 1,000,000 rows in the largest table ({grown_label})",
                f"{rows:,} rows in {largest[0]}.{largest[1].get('largest_table')}",
                "-",
                rows >= 1_000_000,
            )
        )
        for service in SERVICES:
            one, many = base["services"][service], grown["services"][service]
            change = many["events_per_s"] / one["events_per_s"]
            out.append(
                _target(
                    f"{service}: backlog rate with {grown_label} history within 20% of 1x",
                    f"{change:.0%} ({_f(one['events_per_s'])} -> {_f(many['events_per_s'])} events/s)",
                    _raw(many),
                    change >= 0.8,
                )
            )
        compare = next(iter(_lead_steps(grown) or grown.get("latency", {}).get("leads", [])), None)
        name = f"p99 POST /leads -> email.sent with {grown_label} history within 20% of 1x at the same load"
        same = (
            next((s for s in steps if compare and s["offered_per_s"] == compare["offered_per_s"]), None)
            if compare
            else None
        )
        if compare is None or same is None:
            out.append(_target(name, "not measured", _hop(grown), False))
        else:
            out.append(
                _target(
                    name,
                    f"{_f(same['p99_ms'])} -> {_f(compare['p99_ms'])} ms at {_f(compare['offered_per_s'])}/s "
                    f"({_checks(compare)})",
                    _hop(grown),
                    compare["p99_ms"] <= 1.2 * same["p99_ms"] and compare["held"],
                )
            )

    for service in SERVICES:
        peaks = {label: rnd["memory_mb"][service] for label, rnd in rounds.items() if "memory_mb" in rnd}
        peak = max(peaks.values(), default=float("nan"))
        out.append(
            _target(
                f"{service}: resident memory < 150 MB, also with {grown_label} history",
                ", ".join(f"{label} {_f(mb)} MB" for label, mb in peaks.items()),
                "-",
                bool(peaks) and peak < 150,
            )
        )

    overloads = base.get("latency", {}).get("overload") or []
    if not overloads:
        out.append(_target("overload (2x and 10x the highest load held)", "not measured", "-", False))
    for step in overloads:
        times, plateau = step["times"], step["plateau_per_s"]
        label = f"overload {times}x ({_f(step['offered_per_s'])}/s offered, plateau {_f(plateau)}/s)"
        share = step["achieved_per_s"] / plateau if plateau else 0.0
        out.append(
            _target(
                f"{label}: completed rate >= 90% of the plateau",
                f"{share:.0%} ({_f(step['achieved_per_s'], 1)}/s)",
                f"plateau {_f(plateau)}/s "
                + ("(highest load held)" if step.get("plateau_held", True) else "(none held: most done per second)"),
                share >= 0.9,
            )
        )
        refused = step.get("refused") or 0
        fast = refused == 0 or (step.get("refused_p99_ms") or float("inf")) < 1000
        bounded = not step["p99_growing"]
        out.append(
            _target(
                f"{label}: excess refused fast (429/503 + Retry-After) or queued with bounded latency",
                f"refused {refused} (p99 {_f(step.get('refused_p99_ms'))} ms), failed {step['failed_requests']}, "
                f"accepted p99 {_f(step['p99_ms'])} ms ({_f(step['p99_first_half_ms'])} / "
                f"{_f(step['p99_second_half_ms'])} by half)",
                "refusal p99 < 1 s; accepted p99 not growing",
                step["failed_requests"] == 0 and (fast if refused else bounded),
            )
        )
        out.append(
            _target(
                f"{label}: no accepted write lost",
                f"accepted {step.get('accepted', 0)}, {_checks(step)}",
                f"drain {_f(step.get('drain_s'))} s" if step.get("drain_s") else "-",
                step.get("lost", 0) == 0 and step.get("duplicates", 0) == 0,
            )
        )
    return out


def write_json(result: dict, out: Path, *, name: str = "bench.json") -> Path:
    path = out / name
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def _backlog_table(rnd: dict) -> list[str]:
    db = rnd["limits"]["database"]
    lines = [
        f"Raw database limit: {_f(db['inserts_per_s'])} rows/s (batched inserts of {db['rows']:,} rows of "
        f"{db['row_bytes']} B, {db['batch']} per transaction).",
        "",
        "| service | events measured | seconds | events/s | raw produce/s | raw consume/s | raw round trip/s "
        "| ratio | peak RSS MB | flame graph |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for service in SERVICES:
        s = rnd["services"][service]
        raw = s["raw_broker"]
        flame = (s.get("flame") or {}).get("file")
        lines.append(
            f"| {service} | {s['measured']:,} | {_f(s['seconds'], 1)} | {_f(s['events_per_s'])} | "
            f"{_f(raw['produce_per_s'])} | {_f(raw['consume_per_s'])} | {_f(raw['round_trip_per_s'])} | "
            f"{s['ratio']:.1%} | {_f(rnd['memory_mb'][service])} | {f'[svg]({flame})' if flame else '-'} |"
        )
    return [*lines, ""]


def _cpu_by_process(steps: list[dict]) -> list[str]:
    """CPU per lead of each process at each lead step (where a step's CPU went)."""
    measured = [s for s in steps if s.get("cpu_ms_per_lead_by_process")]
    if not measured:
        return []
    names = list(measured[0]["cpu_ms_per_lead_by_process"])
    lines = [
        "",
        "CPU per lead by process (ms):",
        "",
        "| step | offered/s | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for s in measured:
        by = s["cpu_ms_per_lead_by_process"]
        lines.append(
            f"| {s.get('kind', '-')} | {_f(s['offered_per_s'])} | "
            + " | ".join(_f(by.get(name), 1) for name in names)
            + " |"
        )
    return lines


def _steps_table(rnd: dict) -> list[str]:
    lines = [
        "| path | step | offered/s | achieved/s | sent | done | refused (p99) | failed (why) | lost | doubled "
        "| p50 ms | p95 ms | p99 ms | p99 1st/2nd half | CPU ms/lead | held |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    latency = rnd["latency"]
    for route, steps in (
        ("POST /leads -> email.sent", latency["leads"] + latency.get("overload", [])),
        ("POST /payments -> deposit.cleared", latency["payments"]),
    ):
        for s in steps:
            lines.append(
                f"| {route} | {s.get('kind', '-')} | {_f(s['offered_per_s'])} | {_f(s['achieved_per_s'], 1)} | "
                f"{s['sent']} | {s['completed']} | {_refused(s)} | {_failed(s)} | {s.get('lost', '-')} | "
                f"{s.get('duplicates', '-')} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | {_f(s['p99_ms'])} | "
                f"{_f(s['p99_first_half_ms'])} / {_f(s['p99_second_half_ms'])} | "
                f"{_f(s.get('cpu_ms_per_lead'), 1)} | {'yes' if s['held'] else 'no'} |"
            )
    lines += _cpu_by_process(latency["leads"] + latency.get("overload", []))
    hops = latency.get("broker_hop") or []
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
    skipped = latency.get("skipped_loads") or []
    if "highest_held_per_s" in latency:
        lines += [
            "",
            f"Highest load held (POST /leads): {_f(latency['highest_held_per_s'])} leads/s."
            + (
                f" Ladder steps not run, the load below already saturated: {', '.join(_f(r) for r in skipped)}/s."
                if skipped
                else ""
            ),
        ]
    flames = [f for s in latency["leads"] for f in s.get("flames") or [] if f.get("file")]
    if flames:
        lines += [
            "",
            "Flame graphs under the lead load: " + ", ".join(f"[{f['file']}]({f['file']})" for f in flames) + ".",
        ]
    return [*lines, ""]


def _seeded(rnd: dict) -> list[str]:
    seeded = rnd.get("seeded") or {}
    if not seeded:
        return []
    lines = [
        "History written before this round (the 1x databases copied, rows multiplied by bulk "
        "`INSERT ... SELECT` with fresh keys; `bench/history.py`):",
        "",
        "| service | tables grown (rows after) | left alone | largest table | seconds | file MB |",
        "|---|---|---|---|---|---|",
    ]
    for service, figures in seeded.items():
        if "error" in figures:
            lines.append(f"| {service} | {figures['error']} | - | - | - | - |")
            continue
        grown = ", ".join(f"{t} {v['after']:,}" for t, v in figures["tables"].items())
        skipped = ", ".join(f"{t} ({why})" for t, why in figures["skipped"].items()) or "-"
        lines.append(
            f"| {service} | {grown or '-'} | {skipped} | {figures['largest_table']} {figures['largest_rows']:,} | "
            f"{figures['seconds']:.0f} | {figures['bytes'] / 1e6:.0f} |"
        )
    return [*lines, ""]


def write_markdown(result: dict, out: Path) -> Path:
    met = sum(1 for t in result["targets"] if t["met"])
    lines = [
        "# Clientflow benchmark",
        "",
        f"Reproduce: `{result['command']}` (`make bench`; publish by copying `reports/bench/*` to `docs/bench/`)  ",
        f"Run: {result['started_at']}, {result['duration_s']:.0f} s. "
        f"Machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"{result['machine']['memory_gb']:.1f} GB, Python {result['machine']['python']}; "
        f"broker: embedded Tansu; database: {result['config']['database']}.",
        "",
        f"## Targets (issue 22): {met} of {len(result['targets'])} met",
        "",
        "| target | value | compared with | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t['target']} | {t['value']} | {t.get('limit', '-')} | {'yes' if t['met'] else '**no**'} |"
        for t in result["targets"]
    ]
    lines += ["", "![throughput and latency against offered load](bench.png)", ""]
    for label, rnd in result["rounds"].items():
        title = "PostgreSQL backlog" if label == "postgresql" else f"{label} history"
        lines += [f"## {title}", ""]
        if "not_measured" in rnd:
            lines += [f"Not measured: {rnd['not_measured']}.", ""]
            continue
        lines += _seeded(rnd)
        lines += _backlog_table(rnd)
        if "latency" in rnd:
            lines += _steps_table(rnd)
    path = out / "bench.md"
    path.write_text("\n".join(lines))
    return path


def write_plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, backlog) = plt.subplots(1, 3, figsize=(17, 4.5))
    backlogs = [(label, rnd) for label, rnd in result["rounds"].items() if "services" in rnd]
    width = 0.8 / max(1, len(backlogs))
    for n, (label, rnd) in enumerate(backlogs):
        shares = [rnd["services"][s]["ratio"] * 100 for s in SERVICES]
        backlog.bar([i + n * width for i in range(len(SERVICES))], shares, width, label=label)
    backlog.axhline(30, color="red", linestyle=":", label="target 30%")
    backlog.set_xticks([i + width * (len(backlogs) - 1) / 2 for i in range(len(SERVICES))], SERVICES)
    backlog.set(ylabel="% of the raw broker round trip", title="Backlog rate against raw")
    measured = [(label, rnd) for label, rnd in result["rounds"].items() if "latency" in rnd]
    for (label, rnd), style in zip(measured, ("-", "--"), strict=False):
        planned = [s for s in rnd["latency"]["leads"] if s.get("kind") != "profiled"]
        steps = sorted(planned + rnd["latency"].get("overload", []), key=lambda s: s["offered_per_s"])
        offered = [s["offered_per_s"] for s in steps]
        left.plot(offered, [s["achieved_per_s"] for s in steps], "o" + style, label=f"achieved ({label} history)")
        right.plot(offered, [s["p50_ms"] for s in steps], "o" + style, label=f"p50 ({label})")
        right.plot(offered, [s["p99_ms"] for s in steps], "s" + style, label=f"p99 ({label})")
    top = max(
        (s["offered_per_s"] for _, r in measured for s in r["latency"]["leads"] + r["latency"].get("overload", [])),
        default=1,
    )
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    left.set(xlabel="offered leads/s (POST /leads)", ylabel="leads/s reaching email.sent", title="Throughput")
    right.axhline(250, color="red", linestyle=":", label="p99 target 250 ms")
    right.set(
        xlabel="offered leads/s (POST /leads)", ylabel="ms, POST /leads -> email.sent", yscale="log", title="Latency"
    )
    for ax in (left, right, backlog):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Clientflow on the embedded broker, " + result["config"]["database"])
    fig.tight_layout()
    path = out / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""``python -m bench``: measure Clientflow against the raw limits of its broker and database.

The default run takes about ten minutes on two cores; ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench import measure, report, workloads
from bench.cluster import API_KEY, SERVICES, Databases, Instance, migrate, start_broker

console = Console()
app = typer.Typer(add_completion=False, help=__doc__)

PARTITIONS = 3  # as `clientflow run` creates them (CLIENTFLOW_TOPIC_PARTITIONS default)


class Config:
    def __init__(
        self,
        *,
        quick: bool,
        events: int | None,
        growth: int,
        loads: list[float],
        step_s: float | None,
        payments: int | None,
        database_url: str | None,
    ) -> None:
        self.quick = quick
        self.events = events or (150 if quick else 800)
        self.growth = growth
        self.loads = loads or ([10.0, 30.0] if quick else [10.0, 25.0, 50.0, 100.0, 300.0, 1000.0])
        self.step_s = step_s or (4.0 if quick else 10.0)
        self.payments = payments or (20 if quick else 200)
        self.payment_rate = 10.0 if quick else 20.0
        self.drain_s = 20.0
        self.database_url = database_url

    def as_dict(self, databases: Databases) -> dict:
        return {
            "quick": self.quick,
            "events": self.events,
            "growth": self.growth,
            "loads": self.loads,
            "step_seconds": self.step_s,
            "payments": self.payments,
            "payment_rate": self.payment_rate,
            "database": databases.kind,
            "partitions": PARTITIONS,
        }


def _workload(service: str, total: int, lead_ids: list) -> list[workloads.Message]:
    rng = measure.rng(len(service) * 7919 + total)
    if service == "leads":
        return workloads.for_leads(lead_ids, total, rng)
    return {"nurture": workloads.for_nurture, "billing": workloads.for_billing, "retention": workloads.for_retention}[
        service
    ](total, rng)


def _completed(progress: Progress, task: TaskID) -> measure.Progress:
    """A callback that sets how much of ``task`` is done."""
    return lambda done: progress.update(task, completed=done)


def _advanced(progress: Progress, task: TaskID) -> measure.Progress:
    """A callback that adds to what ``task`` has done."""
    return lambda more: progress.advance(task, more)


async def run_round(
    cfg: Config, label: str, scale: int, databases: Databases, workdir: Path, progress: Progress
) -> dict:
    result: dict = {"history_scale": scale, "services": {}, "memory_mb": {}}
    total = cfg.events * scale
    urls = {service: await databases.make(f"{service}_{label}") for service in SERVICES}
    for service in SERVICES:
        await migrate(service, urls[service])
    raw_url = await databases.make(f"raw_{label}")
    result["limits"] = {"database": await measure.raw_database(raw_url, count=cfg.events, size=700)}

    for service in SERVICES:
        task = progress.add_task(f"[{label}] {service}: backlog", total=total)
        cluster = await start_broker(workdir / label, partitions=PARTITIONS)
        proc = cluster.add(service, name=service, database_url=urls[service])
        try:
            lead_ids = []
            if service == "leads":
                progress.update(task, description=f"[{label}] leads: capturing {max(50, total // 4)} known leads")
                lead_ids = await measure.seed_leads(urls["leads"], max(50, total // 4), tag=label)

            history = max(50, total - cfg.events)
            messages = _workload(service, history + cfg.events, lead_ids)
            size = measure.message_size(messages)
            progress.update(task, description=f"[{label}] {service}: raw broker limit ({cfg.events} x {size} B)")
            raw = await measure.raw_broker(cluster.bootstrap, count=cfg.events, size=size)
            progress.update(task, total=len(messages), description=f"[{label}] {service}: consuming the backlog")
            figures = await measure.backlog(
                cluster, proc, messages, history=history, progress=_completed(progress, task)
            )
        finally:
            cluster.stop()
        figures["raw_broker"] = raw
        figures["ratio"] = figures["events_per_s"] / raw["round_trip_per_s"]
        result["services"][service] = figures
        result["memory_mb"][service] = figures["peak_rss_mb"]
        progress.update(
            task,
            description=f"[{label}] {service}: {figures['events_per_s']:.0f} events/s ({figures['ratio']:.0%} of raw)",
        )

    result["latency"] = await latency(cfg, label, urls, workdir / label, progress)
    for service, mb in result["latency"].pop("memory_mb").items():
        result["memory_mb"][service] = max(result["memory_mb"][service], mb)
    return result


async def latency(cfg: Config, label: str, urls: dict[str, str], workdir: Path, progress: Progress) -> dict:
    cluster = await start_broker(workdir, partitions=PARTITIONS)
    procs = {s: cluster.add(s, name=s, database_url=urls[s]) for s in SERVICES}
    watcher = measure.Watcher(cluster.bootstrap, ["engagement", "payments"])
    out: dict = {"leads": [], "payments": []}
    try:
        # The floor under each consumer hop: one message at a time, at Kafka's default fetch wait
        # and at the one the services run with here.
        services_wait = int(cluster.child_env(procs["leads"])["KAFKA_FETCH_MAX_WAIT_MS"])
        out["broker_hop"] = [
            await measure.raw_latency(cluster.bootstrap, fetch_max_wait_ms=wait) for wait in (500, services_wait)
        ]
        await cluster.start(procs.values())
        await watcher.start()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=30, limits=limits, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            task = progress.add_task(f"[{label}] warm-up (consumer groups join)", total=None)
            await measure.lead_step(
                http, procs["leads"], watcher, rate=5, seconds=2, drain_s=60, progress=lambda _: None
            )
            progress.update(
                task, description=f"[{label}] preparing {cfg.payments} deposit invoices", total=cfg.payments
            )
            invoices = await measure.prepare_invoices(
                http, procs["leads"], procs["billing"], cfg.payments, progress=_advanced(progress, task)
            )
            await settle(procs)
            pay_task = progress.add_task(f"[{label}] POST /payments at {cfg.payment_rate:.0f}/s", total=len(invoices))
            out["payments"].append(
                await measure.payment_step(
                    http,
                    procs["billing"],
                    watcher,
                    invoices,
                    rate=cfg.payment_rate,
                    drain_s=cfg.drain_s,
                    progress=_completed(progress, pay_task),
                )
            )
            out["skipped_loads"] = []
            for rate in cfg.loads:
                if out["leads"] and out["leads"][-1]["achieved_per_s"] < 0.5 * out["leads"][-1]["offered_per_s"]:
                    # Saturated already: a higher load only queues more (and would spill into the next round).
                    out["skipped_loads"].append(rate)
                    continue
                await settle(procs)
                total = int(rate * cfg.step_s)
                step_task = progress.add_task(f"[{label}] POST /leads at {rate:.0f}/s", total=total)
                step = await measure.lead_step(
                    http,
                    procs["leads"],
                    watcher,
                    rate=rate,
                    seconds=cfg.step_s,
                    drain_s=cfg.drain_s,
                    progress=_completed(progress, step_task),
                )
                progress.update(
                    step_task,
                    completed=total,
                    description=(
                        f"[{label}] POST /leads at {rate:.0f}/s: p99 {step['p99_ms']:.0f} ms, "
                        f"{step['achieved_per_s']:.0f}/s, {'held' if step['held'] else 'not held'}"
                    ),
                )
                out["leads"].append(step)
        out["memory_mb"] = {s: p.peak_rss_mb() for s, p in procs.items()}
    finally:
        await watcher.stop()
        cluster.stop()
    held = [s["offered_per_s"] for s in out["leads"] if s["held"]]
    out["highest_held_per_s"] = max(held) if held else 0
    return out


async def settle(procs: dict[str, Instance]) -> None:
    """Let every service finish what the previous step caused (e-mails queued for it, events
    still to apply), so a step measures its own load, not the tail of the one before."""
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(measure.quiesce(client, proc) for proc in procs.values()))


def _machine() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def run(cfg: Config, out: Path, keep: bool) -> dict:
    workdir = out / ".work"
    shutil.rmtree(workdir, ignore_errors=True)
    databases = Databases(workdir, cfg.database_url)
    started = time.monotonic()
    result: dict = {
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "config": cfg.as_dict(databases),
        "rounds": {},
    }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            for scale in sorted({1, max(1, cfg.growth)}):
                label = f"{scale}x"
                result["rounds"][label] = await run_round(cfg, label, scale, databases, workdir, progress)
                report.write_json(result, out, name="bench.partial.json")  # kept if a later round fails
    finally:
        await databases.drop_all()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["duration_s"] = time.monotonic() - started
    result["targets"] = report.targets(result)
    return result


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="where bench.json, bench.md and bench.png go")] = Path("reports/bench"),
    quick: Annotated[
        bool, typer.Option(help="a small run (about two minutes) for development and smoke tests")
    ] = False,
    events: Annotated[int | None, typer.Option(help="events measured per service (default 800; quick 150)")] = None,
    growth: Annotated[int, typer.Option(help="history multiple of the second round")] = 10,
    loads: Annotated[str | None, typer.Option(help="offered POST /leads rates, comma separated")] = None,
    step_seconds: Annotated[float | None, typer.Option(help="seconds per offered load")] = None,
    payments: Annotated[int | None, typer.Option(help="deposit invoices paid in the payments step")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="a PostgreSQL server (postgresql+asyncpg://...) to create the databases on; default SQLite files"
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="keep the databases and logs in OUT/.work")] = False,
) -> None:
    cfg = Config(
        quick=quick,
        events=events,
        growth=growth,
        loads=[float(x) for x in loads.split(",")] if loads else [],
        step_s=step_seconds,
        payments=payments,
        database_url=database_url,
    )
    out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(cfg, out, keep))
    paths = [report.write_json(result, out), report.write_markdown(result, out), report.write_plot(result, out)]
    (out / "bench.partial.json").unlink(missing_ok=True)
    for target in result["targets"]:
        mark = "[green]met[/]" if target["met"] else "[red]missed[/]"
        console.print(f"{mark}  {target['target']}: {target['value']}")
    console.print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    app()

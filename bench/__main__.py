"""``python -m bench``: measure Clientflow against the raw limits of its broker and database,
every target of issue 22 in one run: each service's backlog (SQLite, and PostgreSQL when
``--postgres-url`` / ``BENCH_POSTGRES_URL`` reaches a server) beside the raw broker round trip,
``POST /leads`` and ``POST /payments`` latency at fixed offered loads, CPU per lead, overload,
memory, and the same with 100x history; flame graphs of each service.

The default run takes under 30 minutes on two cores; ``--quick`` is a smoke run (under five).
Everything lands in ``--out`` (default reports/bench); to publish, copy it as it is:
``cp reports/bench/bench.* reports/bench/flame-*.svg docs/bench/``.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench import history, measure, report, workloads
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
        seconds: float | None,
        growth: int,
        history_rows: int | None,
        loads: list[float],
        step_s: float | None,
        target_rate: float,
        target_s: float | None,
        payments: int | None,
        payment_rate: float,
        overload_s: float | None,
        database_url: str | None,
        postgres_url: str | None,
        flames: bool,
    ) -> None:
        self.quick = quick
        # At least 20,000 events and 30 s per service (issue 22): a shorter round is mostly start-up.
        self.events = events or (1000 if quick else 20_000)
        self.seconds = seconds if seconds is not None else (3.0 if quick else 30.0)
        self.history = 50  # consumed before the measured burst, so the group has joined
        self.known_leads = 50 if quick else 500
        self.growth = growth
        self.history_rows = history_rows or (20_000 if quick else 1_000_000)
        self.loads = loads or ([10.0] if quick else [10.0, 25.0, 50.0, 100.0, 200.0])
        self.step_s = step_s or (4.0 if quick else 10.0)
        self.target_rate = target_rate
        self.target_s = target_s or (2.0 if quick else 60.0)
        self.payment_rate = payment_rate
        self.payments = payments or (50 if quick else int(payment_rate * 10))
        self.overload_s = overload_s or (2.0 if quick else 20.0)
        self.drain_s = 20.0
        self.overload_drain_s = 20.0 if quick else 60.0
        # Waiting for the services to go idle between steps: a saturated step leaves a queue.
        self.settle_s = 30.0 if quick else 180.0
        self.database_url = database_url
        self.postgres_url = postgres_url
        self.flames = flames

    def as_dict(self, databases: Databases) -> dict:
        return {
            "quick": self.quick,
            "events": self.events,
            "seconds": self.seconds,
            "growth": self.growth,
            "history_rows": self.history_rows,
            "loads": self.loads,
            "step_seconds": self.step_s,
            "target_rate": self.target_rate,
            "target_seconds": self.target_s,
            "payments": self.payments,
            "payment_rate": self.payment_rate,
            "overload_seconds": self.overload_s,
            "database": databases.kind,
            "postgres": bool(self.postgres_url),
            "partitions": PARTITIONS,
        }


def _maker(service: str, lead_ids: list) -> Callable[[int], list[workloads.Message]]:
    """``make(n)``: n new events of the service's workload (a new random stream per service)."""
    rng = measure.rng(len(service) * 7919)
    if service == "leads":
        return lambda n: workloads.for_leads(lead_ids, n, rng)
    build = {"nurture": workloads.for_nurture, "billing": workloads.for_billing, "retention": workloads.for_retention}[
        service
    ]
    return lambda n: build(n, rng)


def _workload(service: str, total: int, lead_ids: list) -> list[workloads.Message]:
    """``total`` events of the service's workload (``python -m bench.profile``)."""
    return _maker(service, lead_ids)(total)


def _completed(progress: Progress, task: TaskID) -> measure.Progress:
    """A callback that sets how much of ``task`` is done."""
    return lambda done: progress.update(task, completed=done)


def _advanced(progress: Progress, task: TaskID) -> measure.Progress:
    """A callback that adds to what ``task`` has done."""
    return lambda more: progress.advance(task, more)


class Run:
    """What one run shares across its rounds: the config, where files go, the progress display."""

    def __init__(self, cfg: Config, out: Path, workdir: Path, progress: Progress) -> None:
        self.cfg = cfg
        self.out = out
        self.workdir = workdir
        self.progress = progress
        self.lead_ids: list = []

    def flame_path(self, service: str, phase: str) -> Path | None:
        return self.out / f"flame-{service}-{phase}.svg" if self.cfg.flames else None


async def backlog_round(
    run: Run, label: str, databases: Databases, urls: dict[str, str] | None = None, *, flames: bool = False
) -> tuple[dict, dict[str, str]]:
    """Each service alone on a fresh broker, consuming a backlog of its own workload, beside
    the raw broker round trip with the same message size (and the raw database insert rate)."""
    cfg, progress = run.cfg, run.progress
    result: dict = {"database": databases.kind, "services": {}, "memory_mb": {}}
    if urls is None:
        urls = {service: await databases.make(f"{service}_{label}") for service in SERVICES}
        for service in SERVICES:
            await migrate(service, urls[service])
    raw_url = await databases.make(f"raw_{label}")
    result["limits"] = {"database": await measure.raw_database(raw_url, count=cfg.events, size=700)}
    for service in SERVICES:
        task = progress.add_task(f"[{label}] {service}: backlog", total=cfg.events)
        cluster = await start_broker(run.workdir / label, partitions=PARTITIONS)
        proc = cluster.add(service, name=service, database_url=urls[service])
        try:
            if service == "leads" and not run.lead_ids:
                progress.update(task, description=f"[{label}] leads: capturing {cfg.known_leads} known leads")
                run.lead_ids = await measure.seed_leads(urls["leads"], cfg.known_leads, tag=label)
            make = _maker(service, run.lead_ids)
            size = measure.message_size(make(200))
            progress.update(task, description=f"[{label}] {service}: raw broker limit ({cfg.events} x {size} B)")
            raw = await measure.raw_broker(cluster.bootstrap, count=cfg.events, size=size)
            progress.update(task, description=f"[{label}] {service}: consuming the backlog")
            figures = await measure.backlog(
                cluster,
                proc,
                make,
                history=cfg.history,
                events=cfg.events,
                seconds=cfg.seconds,
                progress=_completed(progress, task),
                flame_to=run.flame_path(service, "backlog" if label == "1x" else f"backlog-{label}")
                if flames
                else None,
            )
        finally:
            cluster.stop()
        figures["raw_broker"] = raw
        figures["ratio"] = figures["events_per_s"] / raw["round_trip_per_s"]
        result["services"][service] = figures
        result["memory_mb"][service] = figures["peak_rss_mb"]
        progress.update(
            task,
            completed=figures["measured"],
            total=figures["measured"],
            description=f"[{label}] {service}: {figures['events_per_s']:.0f} events/s ({figures['ratio']:.0%} of raw)",
        )
    return result, urls


async def run_main_round(run: Run, databases: Databases) -> tuple[dict, dict[str, str]]:
    """1x: every service's backlog, then the whole system under HTTP load."""
    result, urls = await backlog_round(run, "1x", databases, flames=True)
    result["history_scale"] = 1
    result["latency"] = await latency(run, "1x", urls, full=True)
    for service, mb in result["latency"].pop("memory_mb").items():
        result["memory_mb"][service] = max(result["memory_mb"][service], mb)
    return result, urls


async def run_grown_round(run: Run, databases: Databases, base_urls: dict[str, str], compare_rate: float) -> dict:
    """The 1x databases multiplied (``bench.history``), then the backlog and a lead step again."""
    cfg, label = run.cfg, f"{run.cfg.growth}x"
    task = run.progress.add_task(f"[{label}] growing the history", total=len(SERVICES))
    urls, seeded = {}, {}
    for service in SERVICES:
        urls[service] = await databases.copy(f"{service}_{label}", base_urls[service])
        path = history.sqlite_path(urls[service])
        if path is None:
            seeded[service] = {"error": "history is multiplied on SQLite only; the 1x history as it is"}
        else:
            seeded[service] = await asyncio.to_thread(history.multiply, path, factor=cfg.growth, rows=cfg.history_rows)
        run.progress.advance(task)
    largest = max(seeded.items(), key=lambda kv: kv[1].get("largest_rows", 0))
    run.progress.update(
        task,
        description=f"[{label}] history: {largest[1].get('largest_rows', 0):,} rows in "
        f"{largest[0]}.{largest[1].get('largest_table')}",
    )
    # Profiled as the 1x backlog is (py-spy samples without stopping the process), so a rate
    # that drops with history comes with the profile that shows where its time went.
    result, _ = await backlog_round(run, label, databases, urls, flames=True)
    result["history_scale"] = cfg.growth
    result["seeded"] = seeded
    result["latency"] = await latency(run, label, urls, full=False, compare_rate=compare_rate)
    for service, mb in result["latency"].pop("memory_mb").items():
        result["memory_mb"][service] = max(result["memory_mb"][service], mb)
    return result


async def latency(run: Run, label: str, urls: dict[str, str], *, full: bool, compare_rate: float | None = None) -> dict:
    """The four services together. Full: payments, the ladder of lead loads, the target load
    held for its time, a profiled step and the overload steps; else one lead step at
    ``compare_rate`` (the 100x round's comparison with 1x)."""
    cfg, progress = run.cfg, run.progress
    cluster = await start_broker(run.workdir / label, partitions=PARTITIONS)
    procs = {s: cluster.add(s, name=s, database_url=urls[s]) for s in SERVICES}
    watcher = measure.Watcher(cluster.bootstrap, ["engagement", "payments"])
    out: dict = {"leads": [], "payments": [], "overload": [], "skipped_loads": []}
    try:
        # The floor under each consumer hop: one message at a time, at Kafka's default fetch wait
        # and at the one the services run with here.
        services_wait = int(cluster.child_env(procs["nurture"])["KAFKA_FETCH_MAX_WAIT_MS"])  # the lead's hop
        out["broker_hop"] = [
            await measure.raw_latency(cluster.bootstrap, fetch_max_wait_ms=wait) for wait in (500, services_wait)
        ]
        await cluster.start(procs.values())
        await watcher.start()
        task = progress.add_task(f"[{label}] nurture sends what the backlog round queued", total=None)
        async with httpx.AsyncClient(timeout=30) as client:
            out["queue_left"] = await measure.sender_drained(client, procs["nurture"], patience=600)
        progress.update(task, description=f"[{label}] nurture's queue: {out['queue_left']:.0f} due e-mails left")
        # CPU per lead: the four services and the broker (the load generator, this process, apart).
        pids = {s: p.process.pid for s, p in procs.items() if p.process is not None}
        if cluster.broker is not None and cluster.broker.process is not None:
            pids["broker"] = cluster.broker.process.pid
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        # The timed POSTs go through the lean Poster; the rest (setting up, reading) through httpx.
        async with httpx.AsyncClient(timeout=30, limits=limits, headers=auth) as http, measure.Poster(auth) as poster:

            async def step(rate: float, seconds: float, *, kind: str, drain_s: float, **extra: Any) -> dict:
                await settle(procs, cfg.settle_s)
                total = int(rate * seconds)
                task = progress.add_task(f"[{label}] POST /leads at {rate:.0f}/s for {seconds:.0f} s", total=total)
                result = await measure.lead_step(
                    poster,
                    procs["leads"],
                    watcher,
                    rate=rate,
                    seconds=seconds,
                    drain_s=drain_s,
                    progress=_completed(progress, task),
                    cpu_pids=pids,
                    **extra,
                )
                result["kind"] = kind
                progress.update(
                    task,
                    completed=total,
                    description=(
                        f"[{label}] {kind} POST /leads at {rate:.0f}/s: p99 {result['p99_ms']:.0f} ms, "
                        f"{result['achieved_per_s']:.0f}/s, refused {result['refused']}, lost {result['lost']}, "
                        f"{'held' if result['held'] else 'not held'}"
                    ),
                )
                return result

            task = progress.add_task(f"[{label}] warm-up (consumer groups join)", total=None)
            await measure.lead_step(
                poster, procs["leads"], watcher, rate=5, seconds=2, drain_s=60, progress=lambda _: None
            )
            if not full:
                progress.update(task, description=f"[{label}] warm-up done")
                out["leads"].append(
                    await step(compare_rate or cfg.loads[0], cfg.step_s, kind="compare", drain_s=cfg.drain_s)
                )
                out["memory_mb"] = {s: p.peak_rss_mb() for s, p in procs.items()}
                return out
            progress.update(
                task, description=f"[{label}] preparing {cfg.payments} deposit invoices", total=cfg.payments
            )
            invoices = await measure.prepare_invoices(
                http, cluster.bootstrap, procs["billing"], cfg.payments, progress=_advanced(progress, task)
            )
            await settle(procs, cfg.settle_s)
            pay_task = progress.add_task(f"[{label}] POST /payments at {cfg.payment_rate:.0f}/s", total=len(invoices))
            out["payments"].append(
                await measure.payment_step(
                    poster,
                    procs["billing"],
                    watcher,
                    invoices,
                    rate=cfg.payment_rate,
                    drain_s=cfg.drain_s,
                    progress=_completed(progress, pay_task),
                )
            )
            for rate in cfg.loads:
                if out["leads"] and out["leads"][-1]["achieved_per_s"] < 0.5 * out["leads"][-1]["offered_per_s"]:
                    # Saturated already: a higher load only queues more (and would spill into the next step).
                    out["skipped_loads"].append(rate)
                    continue
                out["leads"].append(await step(rate, cfg.step_s, kind="ladder", drain_s=cfg.drain_s))
            # The target load, held for its time, whatever the ladder found.
            out["leads"].append(await step(cfg.target_rate, cfg.target_s, kind="target", drain_s=cfg.drain_s))
            held = [s["offered_per_s"] for s in out["leads"] if s["held"]]
            out["highest_held_per_s"] = max(held) if held else 0
            # The plateau: the highest load held; when none was, the most any step completed per
            # second (what the system can do), so the overload steps still offer 2x and 10x of it.
            plateau = max(held) if held else max(1.0, round(max(s["achieved_per_s"] for s in out["leads"])))
            out["plateau_per_s"] = plateau
            out["plateau_held"] = bool(held)
            if cfg.flames:
                flames = {p.process.pid: run.out / f"flame-{s}-leads.svg" for s, p in procs.items() if p.process}
                profiled = await step(
                    plateau, min(cfg.step_s, 10.0), kind="profiled", drain_s=cfg.drain_s, flame_to=flames
                )
                out["leads"].append(profiled)
            for times in (2, 10):
                overload = await step(
                    plateau * times, cfg.overload_s, kind=f"overload {times}x", drain_s=cfg.overload_drain_s
                )
                overload["plateau_per_s"] = plateau
                overload["plateau_held"] = bool(held)
                overload["times"] = times
                out["overload"].append(overload)
        out["memory_mb"] = {s: p.peak_rss_mb() for s, p in procs.items()}
    finally:
        await watcher.stop()
        cluster.stop()
    return out


async def settle(procs: dict[str, Instance], patience: float = 300) -> None:
    """Let every service finish what the previous step caused (e-mails queued for it, events
    still to apply), so a step measures its own load, not the tail of the one before."""
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(measure.quiesce(client, proc, patience) for proc in procs.values()))
        if "nurture" in procs:
            # The e-mails the last step's events made due (the payments step's invoices and
            # receipts: a thousand of them), then what sending them caused.
            await measure.sender_drained(client, procs["nurture"], patience)
            await asyncio.gather(*(measure.quiesce(client, proc, patience) for proc in procs.values()))


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
    postgres = Databases(workdir, cfg.postgres_url) if cfg.postgres_url else None
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
            bench = Run(cfg, out, workdir, progress)
            phases = result["phase_seconds"] = {}
            mark = time.monotonic()
            result["rounds"]["1x"], urls = await run_main_round(bench, databases)
            phases["1x"], mark = time.monotonic() - mark, time.monotonic()
            report.write_json(result, out, name="bench.partial.json")  # kept if a later round fails
            why = "no PostgreSQL server given (--postgres-url or BENCH_POSTGRES_URL)"
            if postgres is not None:
                why = await postgres.unreachable() or ""
            if why:
                result["rounds"]["postgresql"] = {"not_measured": why}
            else:
                assert postgres is not None
                result["rounds"]["postgresql"], _ = await backlog_round(bench, "pg", postgres)
            phases["postgresql"], mark = time.monotonic() - mark, time.monotonic()
            report.write_json(result, out, name="bench.partial.json")
            if cfg.growth > 1:
                base = result["rounds"]["1x"]["latency"]
                compare = base["highest_held_per_s"] or cfg.loads[0]
                result["rounds"][f"{cfg.growth}x"] = await run_grown_round(bench, databases, urls, compare)
                phases[f"{cfg.growth}x"] = time.monotonic() - mark
    finally:
        await databases.drop_all()
        if postgres is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await postgres.drop_all()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["duration_s"] = time.monotonic() - started
    result["targets"] = report.targets(result)
    return result


@app.command()
def main(
    out: Annotated[
        Path, typer.Option(help="where bench.json, bench.md, bench.png and the flame graphs go (docs/bench to publish)")
    ] = Path("reports/bench"),
    quick: Annotated[
        bool, typer.Option(help="a small run (under five minutes) for development and smoke tests")
    ] = False,
    events: Annotated[
        int | None, typer.Option(help="events measured at least per service backlog (default 20,000; quick 2,000)")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="seconds measured at least per service backlog (default 30; quick 5)")
    ] = None,
    growth: Annotated[int, typer.Option(help="history multiple of the grown round (1: no such round)")] = 100,
    history_rows: Annotated[
        int | None, typer.Option(help="rows of the largest table (inbox) in the grown round (default 1,000,000)")
    ] = None,
    loads: Annotated[str | None, typer.Option(help="the ladder of offered POST /leads rates, comma separated")] = None,
    step_seconds: Annotated[float | None, typer.Option(help="seconds per ladder step")] = None,
    target_rate: Annotated[float, typer.Option(help="the target load, always run (leads/s)")] = 300.0,
    target_seconds: Annotated[float | None, typer.Option(help="seconds the target load is held (default 60)")] = None,
    payments: Annotated[int | None, typer.Option(help="deposit invoices paid in the payments step")] = None,
    payment_rate: Annotated[float, typer.Option(help="offered POST /payments rate")] = 100.0,
    overload_seconds: Annotated[float | None, typer.Option(help="seconds of each overload step (default 20)")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="a PostgreSQL server (postgresql+asyncpg://...) to create every round's databases on; default SQLite files"
        ),
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            envvar="BENCH_POSTGRES_URL",
            help="a PostgreSQL server for the PostgreSQL backlog round (missing or unreachable: reported not measured)",
        ),
    ] = None,
    flames: Annotated[bool, typer.Option(help="py-spy flame graphs of each service (backlog and lead load)")] = True,
    keep: Annotated[bool, typer.Option(help="keep the databases and logs in OUT/.work")] = False,
) -> None:
    cfg = Config(
        quick=quick,
        events=events,
        seconds=seconds,
        growth=growth,
        history_rows=history_rows,
        loads=[float(x) for x in loads.split(",")] if loads else [],
        step_s=step_seconds,
        target_rate=target_rate,
        target_s=target_seconds,
        payments=payments,
        payment_rate=payment_rate,
        overload_s=overload_seconds,
        database_url=database_url,
        postgres_url=postgres_url,
        flames=flames,
    )
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("flame-*.svg"):  # a run's report links only its own flame graphs
        old.unlink()
    result = asyncio.run(run(cfg, out, keep))
    paths = [report.write_json(result, out), report.write_markdown(result, out), report.write_plot(result, out)]
    (out / "bench.partial.json").unlink(missing_ok=True)
    for target in result["targets"]:
        mark = "[green]met[/]" if target["met"] else "[red]missed[/]"
        console.print(f"{mark}  {target['target']}: {target['value']}")
    console.print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    app()

"""``python -m bench.profile SERVICE``: a service's consumer path in-process, without Kafka,
under pyinstrument. The same workload as the backlog benchmark goes through the service's
own BatchConsumer (parse, inbox, handlers, outbox, one transaction per batch), so what the
profile shows is our code and the database, not the broker. Nurture's sender pass (claim,
render, send, record) is profiled as well, since it turns every lead.captured into an e-mail."""

from __future__ import annotations

import asyncio
import collections
import importlib
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import ConsumerRecord

from bench import measure, workloads
from bench.__main__ import _workload
from bench.cluster import migrate
from shared.db import statement_log

app = typer.Typer(add_completion=False, help=__doc__)


def _records(messages: list[workloads.Message]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(m.topic, 0, i, 0, 0, m.key, m.value, None, len(m.key), len(m.value), [])
        for i, m in enumerate(messages)
    ]


class Statements:
    """The SQL statements a phase sends, counted by their first words."""

    def __init__(self, engine) -> None:
        self.log = statement_log(engine)

    def report(self, label: str, per: int, top: int = 12) -> str:
        counts = collections.Counter(" ".join(s.split()[:4])[:70] for s in self.log)
        lines = [f"{label}: {len(self.log) / per:.1f} SQL statements per event"]
        lines += [f"  {n / per:6.2f}  {text}" for text, n in counts.most_common(top)]
        self.log.clear()
        return "\n".join(lines)


async def _run(
    service: str,
    events: int,
    history: int,
    batch: int,
    out: Path | None,
    profile: bool = True,
    database_url: str | None = None,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-profile-{service}-"))
    url = database_url or f"sqlite+aiosqlite:///{workdir / f'{service}.db'}"
    await migrate(service, url)
    settings_module = importlib.import_module(f"services.{service}.settings")
    app_module = importlib.import_module(f"services.{service}.app")
    settings = settings_module.Settings(database_url=url, data_dir=workdir, migrate_on_start=False)
    fastapi_app = app_module.create_app(settings)
    runtime = fastapi_app.state.runtime
    consumer = runtime._consumer
    statements = Statements(runtime.engine)
    lead_ids = await measure.seed_leads(url, max(50, (history + events) // 4), tag="p") if service == "leads" else []
    records = _records(_workload(service, history + events, lead_ids))
    for start in range(0, history, batch):
        await consumer.handle(records[start : min(history, start + batch)])
    sender = getattr(fastapi_app.state, "sender", None)
    if sender is not None:
        await sender.tick(datetime.now(UTC))

    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    if profile:
        profiler.start()
    statements.log.clear()
    started = time.perf_counter()
    for start in range(history, history + events, batch):
        await consumer.handle(records[start : start + batch])
    consumed_s = time.perf_counter() - started
    consumed = statements.report(f"{service} consumer", events)
    sent_s, sent = None, ""
    if sender is not None:
        started = time.perf_counter()
        await sender.tick(datetime.now(UTC))
        sent_s = time.perf_counter() - started
        sent = statements.report(f"{service} sender", events)
    if profile:
        profiler.stop()
    await runtime.engine.dispose()
    print(
        f"{service}: {events / consumed_s:.0f} events/s in-process ({consumed_s:.2f} s for {events}, "
        f"history {history}, batches of {batch})"
    )
    print(consumed)
    if sent_s is not None:
        print(f"{service}: sender pass {sent_s:.2f} s ({events / sent_s:.0f} e-mails/s)")
        print(sent)
    if not profile:
        return
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if out is not None:
        await asyncio.to_thread(out.write_text, profiler.output_html())


@app.command()
def main(
    service: Annotated[str, typer.Argument(help="leads, nurture, billing or retention")],
    events: Annotated[int, typer.Option(help="events profiled")] = 1000,
    history: Annotated[int, typer.Option(help="events applied first, unprofiled")] = 0,
    batch: Annotated[int, typer.Option(help="events per batch (the consumer's max_records)")] = 500,
    html: Annotated[Path | None, typer.Option(help="also write the profile as HTML here")] = None,
    profile: Annotated[bool, typer.Option(help="profile (off: just the in-process rate and statements)")] = True,
    database_url: Annotated[
        str | None, typer.Option(help="an empty database to use (default: a new SQLite file)")
    ] = None,
) -> None:
    asyncio.run(_run(service, events, history, batch, html, profile, database_url))


if __name__ == "__main__":
    app()

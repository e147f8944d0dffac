"""``clientflow replay retention``: rebuild retention's store from the topics' history."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Rebuild a service's store from the topics' history.", no_args_is_help=True)
console = Console()


@app.command("retention")
def replay_retention(
    database_url: Annotated[
        str | None,
        typer.Option(help="fresh database to rebuild into (default: a new SQLite file in the data dir)"),
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka to read")] = None,
) -> None:
    """Read every topic retention consumes (and its own) from offset 0 into a fresh database
    through the same handlers; point RETENTION_DATABASE_URL at it to use it."""
    from services.retention.replay import fresh_sqlite_url, replay
    from services.retention.settings import Settings

    settings = Settings(kafka_bootstrap_servers=bootstrap) if bootstrap else Settings()
    target = database_url or fresh_sqlite_url(settings)
    try:
        report = asyncio.run(replay(settings, database_url=target))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"read {report.read} events from {', '.join(report.topics)}; applied {report.applied},"
        f" skipped {report.skipped}, rejected {len(report.rejected)}"
    )
    for line in report.rejected[:20]:
        console.print(f"  rejected: {line}")
    console.print(f"rebuilt store: {target}")

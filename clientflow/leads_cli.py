"""``clientflow leads ...``: work with the leads service from the command line."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="Leads: import, and more to come.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def leads() -> None:
    """Work with the leads service (a group, so `clientflow leads import FILE` reads as it should)."""


def _default_url() -> str:
    return os.environ.get("LEADS_URL") or f"http://127.0.0.1:{os.environ.get('LEADS_PORT', '8001')}"


def _api_key(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("CLIENTFLOW_API_KEY"):
        return os.environ["CLIENTFLOW_API_KEY"]
    path = Path(os.environ.get("CLIENTFLOW_DATA_DIR", ".clientflow")) / "api-key"
    if path.exists():
        return path.read_text().strip()
    raise typer.BadParameter("no API key: pass --api-key or set CLIENTFLOW_API_KEY", param_hint="--api-key")


def _chunks(text: str, size: int) -> tuple[list[str], list[list[list[str]]]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise typer.BadParameter("the file is empty", param_hint="FILE")
    header, body = rows[0], [r for r in rows[1:] if r and any(c.strip() for c in r)]
    return header, [body[i : i + size] for i in range(0, len(body), size)]


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV with a header row")],
    url: Annotated[str, typer.Option(help="leads service URL (LEADS_URL)")] = "",
    api_key: Annotated[str | None, typer.Option(help="API key (CLIENTFLOW_API_KEY)")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=5000, help="rows sent per request")] = 250,
    report: Annotated[Path | None, typer.Option(help="write the full JSON report here")] = None,
    show: Annotated[int, typer.Option(help="rejected rows to print")] = 20,
) -> None:
    """Import leads from a CSV file: good rows go in, each rejected row is reported with why."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(f"not UTF-8 text: {exc}", param_hint="FILE") from exc
    header, chunks = _chunks(text, chunk_size)
    total_rows = sum(len(c) for c in chunks)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    key = _api_key(api_key)
    summary: dict[str, Any] = {
        "file": str(file),
        "rows": 0,
        "accepted": 0,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }
    ignored: set[str] = set()
    first_row = 1
    with (
        httpx.Client(base_url=url or _default_url(), headers={"Authorization": f"Bearer {key}"}, timeout=120) as client,
        Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("import", total=total_rows)
        for index, chunk in enumerate(chunks):
            # The same file and part always carry the same key: a retry never imports twice.
            response = client.post(
                "/leads/import",
                params={"first_row": first_row},
                content=_csv(header, chunk),
                headers={"Content-Type": "text/csv", "Idempotency-Key": f"import-{digest}-{index}"},
            )
            if response.status_code >= 400:
                console.print(f"[red]the service refused the file ({response.status_code}): {response.text}")
                raise typer.Exit(2)
            part = response.json()
            for name in ("rows", "accepted", "duplicates", "rejected"):
                summary[name] += part[name]
            summary["errors"] += part["errors"]
            ignored.update(part.get("ignored_columns", []))
            first_row += len(chunk)
            progress.advance(task, len(chunk))
    summary["ignored_columns"] = sorted(ignored)
    table = Table(title=f"import of {file.name}")
    for name in ("rows", "accepted", "duplicates", "rejected"):
        table.add_column(name, justify="right")
    table.add_row(*(str(summary[n]) for n in ("rows", "accepted", "duplicates", "rejected")))
    out = Console()
    out.print(table)
    if ignored:
        out.print(f"ignored columns: {', '.join(sorted(ignored))}")
    for error in summary["errors"][:show]:
        out.print(f"row {error['row']}: " + "; ".join(error["errors"]))
    if len(summary["errors"]) > show:
        out.print(f"... and {len(summary['errors']) - show} more rejected rows (see --report)")
    if report is not None:
        report.write_text(json.dumps(summary, indent=2))
        out.print(f"report written to {report}")

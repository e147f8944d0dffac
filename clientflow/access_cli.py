"""``clientflow users ...`` and ``clientflow tokens ...``: the agency's people and their tokens,
against the system ``clientflow run`` started from the same folder (its URLs are in
``<data dir>/system.json``; the admin key is CLIENTFLOW_API_KEY or ``<data dir>/api-key``).

A new token is printed alone on the last line of the output, once every service accepts it."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared.events import ROLES

users = typer.Typer(help="People: add, list, change, disable, enable.", no_args_is_help=True)
tokens = typer.Typer(help="Personal tokens: create, list, revoke.", no_args_is_help=True)
console = Console(stderr=True)  # everything but the token goes to stderr: `TOKEN=$(clientflow users add ...)`

SYSTEM_FILE = "system.json"
DataDir = Annotated[Path, typer.Option(envvar="CLIENTFLOW_DATA_DIR", help="folder of the running system")]
AdminToken = Annotated[
    str | None, typer.Option("--token", envvar="CLIENTFLOW_TOKEN", help="an admin's token (default: the bootstrap key)")
]


def _data_dir(given: Path | None) -> Path:
    return given or Path(os.environ.get("CLIENTFLOW_DATA_DIR", ".clientflow"))


def system_urls(data_dir: Path) -> dict[str, str]:
    """Where the services of the system started from ``data_dir`` listen."""
    path = data_dir / SYSTEM_FILE
    if path.exists():
        return dict(json.loads(path.read_text())["urls"])
    urls = {"leads": os.environ.get("LEADS_URL") or f"http://127.0.0.1:{os.environ.get('LEADS_PORT', '8001')}"}
    return urls


def _admin_token(data_dir: Path, given: str | None) -> str:
    if given:
        return given
    if os.environ.get("CLIENTFLOW_API_KEY"):
        return os.environ["CLIENTFLOW_API_KEY"]
    path = data_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    raise typer.BadParameter(
        f"no admin token: pass --token, set CLIENTFLOW_API_KEY, or run from the folder of `clientflow run` ({path} not found)"
    )


def _call(data_dir: Path, token: str | None, method: str, path: str, body: Any = None) -> Any:
    urls = system_urls(data_dir)
    headers = {"Authorization": f"Bearer {_admin_token(data_dir, token)}"}
    try:
        response = httpx.request(method, urls["leads"] + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach leads at {urls['leads']}: {exc}[/red] (is `clientflow run` running?)")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        console.print(f"[red]{response.status_code}: {detail}[/red]")
        raise typer.Exit(1)
    return response.json()


def parse_expiry(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``90d``, ``12h``, ``2w``, ``30m`` from now, or an ISO 8601 moment; None for never."""
    if not text or text in ("never", "none"):
        return None
    now = now or datetime.now(UTC)
    match = re.fullmatch(r"\s*(\d{1,5})\s*([mhdw])\s*", text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: say 90d, 12h, 2w, 30m or an ISO 8601 date", param_hint="--expires"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wait_accepted(data_dir: Path, admin: str | None, token_id: str, timeout: float = 10.0) -> list[str]:
    """Wait until every service of the system knows the new token; the ones that do not yet.
    It asks as the admin rather than trying the token: a token tried before the people topic
    has brought it to a service would count there as a bad one (and lock the address out)."""
    pending = dict(system_urls(data_dir))
    headers = {"Authorization": f"Bearer {_admin_token(data_dir, admin)}"}
    deadline = time.monotonic() + timeout
    with console.status("waiting for every service to know the token") as status:
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                try:
                    if httpx.get(f"{url}/access/tokens/{token_id}", headers=headers, timeout=2).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            status.update(f"waiting for {', '.join(pending) or 'nothing'}")
            if pending:
                time.sleep(0.1)
    return sorted(pending)


def _print_new_token(data_dir: Path, answer: dict[str, Any], admin: str | None) -> None:
    late = _wait_accepted(data_dir, admin, answer["token_id"])
    if late:
        console.print(f"[yellow]not known yet by {', '.join(late)}; it will be within seconds[/yellow]")
    expires = answer.get("expires_at") or "never"
    scopes = ", ".join(answer.get("scopes") or []) or "all of the role's permissions"
    console.print(f"token {answer['token_id']} ({answer['prefix']}...), expires {expires}, scopes: {scopes}")
    console.print("Shown this once; Clientflow keeps only its digest.")
    print(answer["token"], flush=True)


@users.command("add")
def add(
    email: Annotated[str, typer.Argument(help="the person's e-mail")],
    name: Annotated[str, typer.Option(help="full name")],
    role: Annotated[str, typer.Option(help=" | ".join(ROLES))],
    languages: Annotated[str, typer.Option(help="ISO 639-1 codes, comma-separated (en,bn,fa)")] = "",
    kind: Annotated[str, typer.Option(help="person, or integration for a machine account")] = "person",
    scope: Annotated[list[str] | None, typer.Option(help="narrow the first token to a permission (repeat)")] = None,
    expires: Annotated[str | None, typer.Option(help="the first token expires: 90d, 12h, 2w or a date")] = None,
    data_dir: DataDir = Path(".clientflow"),
    token: AdminToken = None,
) -> None:
    """Add a person with a role; prints their new token alone on the last line."""
    if role not in ROLES:
        raise typer.BadParameter(f"a role is one of {', '.join(ROLES)}", param_hint="--role")
    expires_at = parse_expiry(expires)
    answer = _call(
        data_dir,
        token,
        "POST",
        "/people",
        {
            "email": email,
            "name": name,
            "role": role,
            "kind": kind,
            "languages": [code for code in languages.split(",") if code.strip()],
            "scopes": scope or [],
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    console.print(f"added {answer['email']} ({answer['name']}), role {answer['role']}, id {answer['person_id']}")
    _print_new_token(data_dir, answer["token"], token)


@users.command("list")
def list_people(data_dir: DataDir = Path(".clientflow"), token: AdminToken = None) -> None:
    """Everyone, with their role and how many working tokens they hold."""
    people = _call(data_dir, token, "GET", "/people")
    table = Table("e-mail", "name", "role", "kind", "languages", "active", "tokens", "id")
    table.columns[0].no_wrap = True
    for person in people:
        working = sum(1 for t in person["tokens"] if t["active"])
        table.add_row(
            person["email"],
            person["name"],
            person["role"],
            person["kind"],
            ",".join(person["languages"]),
            "yes" if person["active"] else "[red]disabled[/red]",
            str(working),
            person["person_id"],
        )
    Console().print(table)


def _change(data_dir: Path, token: str | None, email: str, change: dict[str, Any]) -> dict[str, Any]:
    return _call(data_dir, token, "PATCH", f"/people/{email}", change)


@users.command("disable")
def disable(email: str, data_dir: DataDir = Path(".clientflow"), token: AdminToken = None) -> None:
    """Disable a person: every service refuses their tokens within seconds."""
    person = _change(data_dir, token, email, {"active": False})
    console.print(f"{person['email']} disabled; every service refuses their tokens within 5 seconds")


@users.command("enable")
def enable(email: str, data_dir: DataDir = Path(".clientflow"), token: AdminToken = None) -> None:
    """Enable a disabled person again (their tokens that are not revoked or expired work again)."""
    person = _change(data_dir, token, email, {"active": True})
    console.print(f"{person['email']} enabled")


@users.command("change")
def change(
    email: str,
    name: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str | None, typer.Option(help=" | ".join(ROLES))] = None,
    languages: Annotated[str | None, typer.Option(help="ISO 639-1 codes, comma-separated")] = None,
    data_dir: DataDir = Path(".clientflow"),
    token: AdminToken = None,
) -> None:
    """Change a person's name, role or languages."""
    body: dict[str, Any] = {"name": name, "role": role}
    if languages is not None:
        body["languages"] = [code for code in languages.split(",") if code.strip()]
    person = _change(data_dir, token, email, {k: v for k, v in body.items() if v is not None})
    console.print(
        f"{person['email']}: {person['name']}, role {person['role']}, languages {','.join(person['languages'])}"
    )


@tokens.command("create")
def create(
    email: Annotated[str, typer.Argument(help="the person's e-mail or id")],
    expires: Annotated[str | None, typer.Option(help="90d, 12h, 2w, 30m or an ISO 8601 date; default never")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="narrow the token to a permission (repeat), say leads.capture")
    ] = None,
    data_dir: DataDir = Path(".clientflow"),
    token: AdminToken = None,
) -> None:
    """A new token for a person; printed alone on the last line."""
    expires_at = parse_expiry(expires)
    answer = _call(
        data_dir,
        token,
        "POST",
        f"/people/{email}/tokens",
        {
            "scopes": scope or [],
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    _print_new_token(data_dir, answer, token)


@tokens.command("list")
def list_tokens(
    email: Annotated[str | None, typer.Argument(help="only this person's")] = None,
    data_dir: DataDir = Path(".clientflow"),
    token: AdminToken = None,
) -> None:
    found = _call(data_dir, token, "GET", "/tokens" + (f"?person={email}" if email else ""))
    table = Table("id", "prefix", "person", "scopes", "created", "expires", "state")
    for t in found:
        state = "revoked" if t["revoked_at"] else ("active" if t["active"] else "expired")
        table.add_row(
            t["token_id"],
            t["prefix"],
            t["person_id"],
            ",".join(t["scopes"]) or "-",
            t["created_at"][:19],
            (t["expires_at"] or "never")[:19],
            state,
        )
    Console().print(table)


@tokens.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="the token's id, or its prefix (cf_...)")],
    data_dir: DataDir = Path(".clientflow"),
    token: AdminToken = None,
) -> None:
    """Revoke a token: every service refuses it within seconds."""
    if token_id.startswith("cf_"):
        matches = [t for t in _call(data_dir, token, "GET", "/tokens") if token_id.startswith(t["prefix"])]
        if len(matches) != 1:
            console.print(f"[red]{len(matches)} tokens start with {token_id[:15]}[/red]")
            raise typer.Exit(1)
        token_id = matches[0]["token_id"]
    answer = _call(data_dir, token, "DELETE", f"/tokens/{token_id}")
    console.print(f"token {answer['token_id']} ({answer['prefix']}...) revoked at {answer['revoked_at']}")

"""The ``clientflow`` command: run the whole system, migrate, manage topics, move the clock."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clientflow import access_cli, dead_letters_cli, leads_cli, retention_cli, simulate
from clientflow.cluster import TANSU_GROUP_TIMING, Instance, Launcher, port_is_free
from clientflow.cluster import migrate as migrate_database
from clientflow.services import SERVICES, ServiceSpec
from shared import topics
from shared.broker import ensure_topics
from shared.embedded import free_port

app = typer.Typer(help="Clientflow: the client lifecycle of a service business.", no_args_is_help=True)
clock_app = typer.Typer(help="Move the simulated business clock (CLIENTFLOW_CLOCK=simulated).")
app.add_typer(clock_app, name="clock")
app.add_typer(leads_cli.app, name="leads", help="Leads: import a CSV of leads.")
app.add_typer(retention_cli.app, name="replay", help="Rebuild a service's store from the topics' history.")
app.command("simulate")(simulate.command)
app.add_typer(dead_letters_cli.app, name="dead-letters", help="Dead letters: list them per topic, replay them.")
app.add_typer(access_cli.users, name="users", help="People: add (prints their token), list, change, disable, enable.")
app.add_typer(access_cli.tokens, name="tokens", help="Personal tokens: create (prints it), list, revoke.")
console = Console()

DATA_DIR = Path(os.environ.get("CLIENTFLOW_DATA_DIR", ".clientflow"))


def _saved_secret(data_dir: Path, *, variable: str, filename: str, nbytes: int) -> tuple[str, bool]:
    """The secret in ``variable`` when set, else the one saved in ``data_dir/filename``, else a
    new one saved there (owner-only) for next time; and whether it is new."""
    given = os.environ.get(variable)
    if given:
        return given, False
    path = data_dir / filename
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(nbytes)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret, True


def api_key(data_dir: Path) -> tuple[str, bool]:
    """CLIENTFLOW_API_KEY when set, else the saved key, else a new one saved for next time."""
    return _saved_secret(data_dir, variable="CLIENTFLOW_API_KEY", filename="api-key", nbytes=32)


def _secret_key(data_dir: Path) -> str:
    return _saved_secret(data_dir, variable="CLIENTFLOW_SECRET_KEY", filename="secret-key", nbytes=48)[0]


def webhook_secret(data_dir: Path) -> str:
    """BILLING_WEBHOOK_SECRET when set, else the saved one, else a new one saved for next time
    (the payment provider, or ``clientflow simulate``, signs billing's webhooks with it)."""
    return _saved_secret(data_dir, variable="BILLING_WEBHOOK_SECRET", filename="webhook-secret", nbytes=32)[0]


def mail_webhook_secret(data_dir: Path) -> str:
    """NURTURE_WEBHOOK_SECRET when set, else the saved one, else a new one saved for next time
    (the mail provider signs nurture's bounce and inbound-reply webhooks with it)."""
    return _saved_secret(data_dir, variable="NURTURE_WEBHOOK_SECRET", filename="mail-webhook-secret", nbytes=32)[0]


class System:
    """The broker (embedded unless KAFKA_BOOTSTRAP_SERVERS names one) and the service
    processes, on the launcher (``clientflow.cluster``) with the saved secrets."""

    def __init__(
        self, *, data_dir: Path, kafka_port: int, only: list[str] | None, console_port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.kafka_port = kafka_port
        # The web console's port (None: no console), started with the services.
        self.console_port = console_port
        self.specs = [s for s in SERVICES if not only or s.name in only]
        # Children keep the terminal's working directory (relative paths in settings mean what
        # the user meant) and die with this process, however it dies.
        self.launcher = Launcher(
            data_dir, bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""), cwd=None, die_with_parent=True
        )

    @property
    def bootstrap(self) -> str:
        return self.launcher.bootstrap

    def start(self) -> dict[str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        launcher = self.launcher
        env = launcher.env
        key, _ = api_key(self.data_dir)
        env["CLIENTFLOW_API_KEY"] = key
        env["CLIENTFLOW_SECRET_KEY"] = _secret_key(self.data_dir)
        env["BILLING_WEBHOOK_SECRET"] = webhook_secret(self.data_dir)
        env["NURTURE_WEBHOOK_SECRET"] = mail_webhook_secret(self.data_dir)
        if not launcher.bootstrap:
            port = self.kafka_port or free_port()
            with console.status(f"starting the embedded broker on 127.0.0.1:{port}"):
                asyncio.run(launcher.start_broker(port=port))
            for name, value in TANSU_GROUP_TIMING.items():
                env.setdefault(name, value)
            launcher.tansu_fetch_waits()
        partitions = int(env.get("CLIENTFLOW_TOPIC_PARTITIONS", "3"))
        created = asyncio.run(launcher.create_topics(partitions))
        console.print(f"broker {launcher.bootstrap}: {len(created)} topics created")
        # Each service's settings (its address and database) as its process will read them.
        os.environ["CLIENTFLOW_DATA_DIR"] = str(self.data_dir.resolve())
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = launcher.bootstrap
        settings = {spec.name: spec.settings() for spec in self.specs}
        for spec in self.specs:
            with console.status(f"migrating {spec.name}"):
                migrate_database(spec.name, settings[spec.name].database_url)
        env["CLIENTFLOW_MIGRATED"] = "1"
        instances = []
        for spec in self.specs:
            own = settings[spec.name]
            extra = {}
            public = f"{spec.name.upper()}_PUBLIC_URL"
            if spec.name in ("nurture", "leads") and public not in env:
                # Links in e-mails (nurture's) and estimate links (leads') point where the service
                # really listens (its port may not be the default).
                extra[public] = f"http://{own.host}:{own.port}"
            instances.append(launcher.add(spec.name, port=own.port, host=own.host, name=spec.name, env=extra))
        if self.console_port is not None:
            instances.append(self._console())
        # Spawned here, from the main thread with no other thread running (the child runs
        # Python between fork and exec to tie itself to us).
        for instance in instances:
            launcher.spawn(instance)
        with console.status("waiting for the services to be ready") as status:
            asyncio.run(
                launcher.wait_all_ready(
                    instances,
                    progress=lambda pending: status.update(
                        f"waiting for {', '.join(i.name for i in pending) or 'nothing'}"
                    ),
                )
            )
        urls = {i.name: i.url for i in instances}
        # What `clientflow users`, `tokens` and `simulate` run from this folder talk to.
        (self.data_dir / access_cli.SYSTEM_FILE).write_text(
            json.dumps(
                {
                    "urls": {name: url for name, url in urls.items() if name != "console"},
                    "console": urls.get("console"),
                    "bootstrap": launcher.bootstrap,
                    "pid": os.getpid(),
                },
                indent=2,
            )
            + "\n"
        )
        return urls

    def _console(self) -> Instance:
        """The web console, told where each service listens (``CONSOLE_LEADS_URL`` ...)."""
        urls = {}
        for spec in SERVICES:
            own = spec.settings()
            host = "127.0.0.1" if own.host in ("0.0.0.0", "::", "") else own.host
            urls[f"CONSOLE_{spec.name.upper()}_URL"] = f"http://{host}:{own.port}"
        host = os.environ.get("CONSOLE_HOST", "127.0.0.1")
        return self.launcher.add("console", port=self.console_port, host=host, name="console", env=urls)

    def watch(self) -> int:
        """Block until a signal asks us to stop or a service dies; returns the exit code."""
        stop = {"signal": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        crashed = self.launcher.watch(lambda: bool(stop["signal"]))
        if crashed is not None:
            assert crashed.process is not None
            console.print(f"[red]{crashed.name} exited with code {crashed.process.returncode}[/red]; stopping")
            return 1
        return 0

    def stop(self) -> None:
        (self.data_dir / access_cli.SYSTEM_FILE).unlink(missing_ok=True)
        self.launcher.stop()


@app.command()
def run(
    only: Annotated[list[str] | None, typer.Option("--only", help="run just these services")] = None,
    kafka_port: Annotated[
        int, typer.Option(envvar="CLIENTFLOW_KAFKA_PORT", help="port of the embedded broker (0: any free)")
    ] = 9092,
    data_dir: Annotated[Path, typer.Option(envvar="CLIENTFLOW_DATA_DIR")] = DATA_DIR,
    with_console: Annotated[bool, typer.Option("--console/--no-console", help="also run the web console")] = True,
    console_port: Annotated[
        int, typer.Option(envvar="CONSOLE_PORT", help="port of the web console (taken: any free one)")
    ] = 8000,
) -> None:
    """Start the broker (embedded unless KAFKA_BOOTSTRAP_SERVERS is set), create the topics,
    migrate the databases and run the four services and the web console until Ctrl-C or SIGTERM."""
    unknown = set(only or []) - {s.name for s in SERVICES}
    if unknown:
        raise typer.BadParameter(f"unknown services: {', '.join(sorted(unknown))}")
    if kafka_port and not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not port_is_free(kafka_port):
        console.print(f"port {kafka_port} is taken; the embedded broker takes a free one")
        kafka_port = 0
    if with_console and (not console_port or not port_is_free(console_port)):
        if console_port:
            console.print(f"port {console_port} is taken; the console takes a free one")
        console_port = free_port()
    system = System(
        data_dir=data_dir, kafka_port=kafka_port, only=only, console_port=console_port if with_console else None
    )
    code = 1
    try:
        started = time.monotonic()
        urls = system.start()
        key, new = api_key(data_dir)
        console.print(f"[bold]Clientflow is up[/bold] in {time.monotonic() - started:.1f}s")
        for name, url in urls.items():
            if name == "console":
                continue
            console.print(f"  {name:<10} {url}  (docs {url}/docs, log {data_dir / (name + '.log')})", soft_wrap=True)
        if "console" in urls:
            console.print(
                f"  {'console':<10} {urls['console']}  (open it in a browser; sign in with the key below)",
                soft_wrap=True,
            )
        console.print(f"broker: {system.bootstrap}")
        origin = "new, saved to" if new else "from"
        source = "CLIENTFLOW_API_KEY" if os.environ.get("CLIENTFLOW_API_KEY") else f"{origin} {data_dir / 'api-key'}"
        console.print(f"API key, the bootstrap admin ({source}): [bold]{key}[/bold]", soft_wrap=True)
        console.print(
            "Give each person their own token: clientflow users add EMAIL --name NAME --role ROLE", soft_wrap=True
        )
        console.print("Ctrl-C stops everything.")
        code = system.watch()
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]{exc}[/red]")
    finally:
        with console.status("stopping"):
            system.stop()
        console.print("stopped")
    raise typer.Exit(code)


@app.command("console")
def console_command() -> None:
    """Run the web console alone (CONSOLE_PORT, CONSOLE_LEADS_URL ...): what compose runs."""
    from console.serve import main

    main()


@app.command()
def migrate(
    service: Annotated[list[str] | None, typer.Argument(help="services to migrate (default: all)")] = None,
) -> None:
    """Bring each service's database to the newest schema."""
    for spec in _pick(service):
        migrate_database(spec.name, spec.settings().database_url)
        console.print(f"{spec.name}: migrated")


@app.command("create-topics")
def create_topics(
    partitions: Annotated[int, typer.Option(envvar="CLIENTFLOW_TOPIC_PARTITIONS")] = 3,
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
    dead_letter_retention_days: Annotated[
        int, typer.Option(envvar="CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS", min=1, max=3650)
    ] = 30,
) -> None:
    """Create every topic and its dead-letter topic, with their retention (existing ones keep
    their partitions; their retention is set where the broker allows it)."""
    created = asyncio.run(
        ensure_topics(bootstrap, partitions=partitions, dead_letter_retention_days=dead_letter_retention_days)
    )
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")


@clock_app.command("advance")
def clock_advance(
    days: Annotated[float, typer.Option(help="days to move forward")] = 0,
    hours: Annotated[float, typer.Option(help="hours to move forward")] = 0,
    to: Annotated[str | None, typer.Option(help="ISO 8601 moment to move to")] = None,
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS")] = "127.0.0.1:9092",
) -> None:
    """Publish ``clock.advanced`` on topic ``clock``; services on the simulated clock follow."""
    moment = asyncio.run(_advance(bootstrap, days=days, hours=hours, to=to))
    console.print(f"clock: {moment.isoformat()}")


async def _advance(bootstrap: str, *, days: float, hours: float, to: str | None) -> datetime:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from shared.events import ClockAdvanced, Envelope, make_event

    current = None
    # A given moment needs no reading of the current one (``clientflow simulate`` ticks often).
    consumer = None if to else AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    if consumer is not None:
        await consumer.start()
        try:
            partition = TopicPartition(topics.CLOCK, 0)
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            if end > 0:
                consumer.seek(partition, end - 1)
                for records in (await consumer.getmany(timeout_ms=2000)).values():
                    for record in records:
                        current = ClockAdvanced.model_validate(Envelope.model_validate_json(record.value).data).now
        finally:
            await consumer.stop()
    if to:
        moment = datetime.fromisoformat(to)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        moment = (current or datetime.now(UTC)) + timedelta(days=days, hours=hours)
    event = make_event("clock.advanced", ClockAdvanced(now=moment), producer="clock", occurred_at=moment)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.CLOCK, event.model_dump_json().encode(), key=b"clock")
    finally:
        await producer.stop()
    return moment


def build_apps(bootstrap: str = "kafka:9092") -> dict:
    """Each service's app, built without connecting to anything (for documents)."""
    import importlib

    apps = {}
    for spec in SERVICES:
        module = importlib.import_module(f"services.{spec.name}.app")
        settings_cls = type(spec.settings())
        settings = settings_cls(kafka_bootstrap_servers=bootstrap, database_url="sqlite+aiosqlite:///:memory:")
        apps[spec.name] = module.create_app(settings)
    return apps


@app.command()
def docs(out: Annotated[Path, typer.Option(help="folder to write to")] = Path("docs")) -> None:
    """Write the event catalogue, the AsyncAPI document and each service's OpenAPI document."""

    from shared import docs as generate

    apps = build_apps()
    (out / "openapi").mkdir(parents=True, exist_ok=True)
    (out / "events.md").write_text(generate.event_catalogue(apps) + "\n")
    (out / "asyncapi.json").write_text(json.dumps(generate.asyncapi(apps), indent=2, sort_keys=True) + "\n")
    (out / "permissions.md").write_text(generate.permission_table(apps) + "\n")
    for name, service_app in apps.items():
        document = json.dumps(generate.openapi(service_app), indent=2, sort_keys=True) + "\n"
        (out / "openapi" / f"{name}.json").write_text(document)
    console.print(f"wrote {out}/events.md, {out}/permissions.md, {out}/asyncapi.json and {out}/openapi/*.json")


def _pick(names: list[str] | None) -> list[ServiceSpec]:
    specs = [s for s in SERVICES if not names or s.name in names]
    if names and len(specs) != len(names):
        raise typer.BadParameter(f"services are {', '.join(s.name for s in SERVICES)}")
    return specs


if __name__ == "__main__":
    app()

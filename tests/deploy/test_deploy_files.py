"""The compose stack, Prometheus config, rules and dashboards, checked without a Docker engine."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
JOBS_THAT_FINISH = {"no"}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: `make test` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_compose_file_matches_the_compose_schema() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_cross_references_hold() -> None:
    spec = compose()
    services = spec["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a job: restart no"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
        if service.get("restart") not in JOBS_THAT_FINISH:
            assert "healthcheck" in service, f"long-running {name} has no healthcheck"
        command = service.get("command") or []
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert importlib.util.find_spec(module) is not None, f"{name} runs missing module {module}"
            port = {
                "services.leads": 8001,
                "services.nurture": 8002,
                "services.billing": 8003,
                "services.retention": 8004,
            }[module]
            assert any(str(p).endswith(f":{port}") for p in service["ports"]), f"{name} publishes {port}"
            assert f":{port}/health/ready" in json.dumps(service["healthcheck"]), f"{name} checks its own port"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in spec["volumes"], f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    # Every service has its migration job, and all four share one image.
    for name in ("leads", "nurture", "billing", "retention"):
        assert services[f"migrate-{name}"]["command"] == ["clientflow", "migrate", name]
        assert f"{name.upper()}_DATABASE_URL" in services[name]["environment"]
    init = (DEPLOY / "postgres" / "init.sql").read_text()
    assert all(f"CREATE DATABASE {n};" in init for n in ("leads", "nurture", "billing", "retention"))


def test_every_scrape_target_is_a_compose_service_on_its_port() -> None:
    services = compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"scrape target {name} is not a compose service"
                assert any(str(p).endswith(f":{sd['port']}") for p in services[name]["ports"])
                scraped.add(name)
    assert scraped == {"leads", "nurture", "billing", "retention"}


def test_promtool_accepts_the_config_and_rules_and_the_rule_tests_pass() -> None:
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules.test.yml"),
    ):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_dashboards_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("dashboards", DEPLOY / "grafana" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    for name, board in module.DASHBOARDS.items():
        written = json.loads((DEPLOY / "grafana" / "dashboards" / f"{name}.json").read_text())
        assert written == json.loads(json.dumps(board)), f"run `python deploy/grafana/dashboards.py` ({name})"
        assert all(p["targets"] and p["datasource"]["uid"] == "prometheus" for p in written["panels"])


METRIC = re.compile(r"\b(clientflow_[a-z0-9_]+|faststream_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def metric_names_used() -> set[str]:
    """Raw metric names the rules and dashboards query (recording rule names excluded)."""
    texts = [(PROMETHEUS / "rules.yml").read_text()]
    texts += [p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")]
    names = set()
    for text in texts:
        for name in METRIC.findall(text):
            for suffix in SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
            names.add(name)
    return names


def test_rules_and_dashboards_query_something() -> None:
    assert {
        "clientflow_events_consumed_total",
        "clientflow_outbox_backlog",
        "clientflow_consumer_lag",
    } <= metric_names_used()


def test_the_wheel_the_image_installs_carries_migrations_templates_and_sequences(tmp_path: Path) -> None:
    """The Dockerfile runs `pip install .`: a non-editable install must have every data file."""
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("clientflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in ("leads", "nurture", "billing", "retention"):
        versions = [n for n in names if n.startswith(f"services/{service}/migrations/versions/") and n.endswith(".py")]
        on_disk = list((ROOT / "services" / service / "migrations" / "versions").glob("*.py"))
        assert len(versions) == len(on_disk) > 0, service
        assert f"services/{service}/migrations/env.py" in names
        assert f"services/{service}/migrations/script.py.mako" in names
    for folder in ("templates", "sequences"):
        on_disk = {
            p.relative_to(ROOT).as_posix() for p in (ROOT / "services" / "nurture" / folder).iterdir() if p.is_file()
        }
        assert on_disk and on_disk <= names, f"nurture {folder} missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)


def test_compose_takes_every_secret_from_the_env_file_and_the_example_documents_it() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    example = {
        line.split("=", 1)[0]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {
        "CLIENTFLOW_API_KEY",
        "CLIENTFLOW_SECRET_KEY",
        "CLIENTFLOW_MASTER_KEYS",
        "BILLING_WEBHOOK_SECRET",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    } <= required, "secrets have no defaults"
    assert required <= example, f"undocumented: {required - example}"
    assert {v for v in optional if v.startswith("CLIENTFLOW_OIDC")} <= example
    assert "deploy/.env" in (ROOT / ".gitignore").read_text()


def _default(value: str) -> int:
    """The default of ``${NAME:-default}``."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(\d+)\}", value)
    assert match, f"{value!r} is not ${{NAME:-days}}"
    return int(match.group(1))


def test_retention_of_data_follows_the_design() -> None:
    """Business topics a year (replay), dead letters, audit rows and leads as their settings say,
    compacted topics compacted within about two hours, exports a week (docs/design.md,
    "Retention of data")."""
    from services.leads.settings import Settings as LeadsSettings
    from shared import topics
    from shared.broker import DAY_MS, topic_configs
    from shared.settings import ServiceSettings

    services = compose()["services"]
    assert int(services["kafka"]["environment"]["KAFKA_LOG_RETENTION_HOURS"]) == 365 * 24
    shared_days = {
        "CLIENTFLOW_AUDIT_RETENTION_DAYS": ServiceSettings.model_fields["audit_retention_days"].default,
        "CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS": ServiceSettings.model_fields["dead_letter_retention_days"].default,
    }
    for name in ("topics", "leads", "nurture", "billing", "retention"):
        environment = services[name]["environment"]
        for variable, default in shared_days.items():
            assert _default(environment[variable]) == default, (name, variable)
    leads_days = {
        "LEADS_DISQUALIFIED_RETENTION_DAYS": LeadsSettings.model_fields["disqualified_retention_days"].default,
        "LEADS_LOST_RETENTION_DAYS": LeadsSettings.model_fields["lost_retention_days"].default,
    }
    for variable, default in leads_days.items():
        assert _default(services["leads"]["environment"][variable]) == default, variable
    example = (DEPLOY / ".env.example").read_text()
    for variable, default in {**shared_days, **leads_days}.items():
        assert f"\n{variable}={default}\n" in example, f"{variable} is not documented in .env.example"
    # What the topics job (`clientflow create-topics`) creates them with.
    assert services["topics"]["command"] == ["clientflow", "create-topics"]
    dead_letter_days = shared_days["CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS"]
    for name in topics.all_topics_with_dlq():
        configs = topic_configs(name, dead_letter_retention_days=dead_letter_days)
        if name.endswith(topics.DLQ_SUFFIX):
            assert configs == {"cleanup.policy": "delete", "retention.ms": str(dead_letter_days * DAY_MS)}, name
        elif name in topics.COMPACTED_TOPICS:
            assert configs["cleanup.policy"] == "compact", name
            assert int(configs["segment.ms"]) + int(configs["max.compaction.lag.ms"]) <= 2 * 3_600_000, name
            assert float(configs["min.cleanable.dirty.ratio"]) <= 0.01, name
        elif name in topics.BUSINESS_TOPICS:
            assert "retention.ms" not in configs, f"{name} keeps the broker's year"
    assert {topics.PEOPLE, "keys"} <= topics.COMPACTED_TOPICS
    assert topic_configs("exports")["retention.ms"] == str(7 * DAY_MS)

"""The committed documents (docs/) are what `clientflow docs` makes from the code today."""

from __future__ import annotations

import json
from pathlib import Path

from clientflow.cli import build_apps
from shared import docs

DOCS = Path(__file__).resolve().parents[2] / "docs"
HINT = "docs/ is out of date: run `clientflow docs` and commit the result"


def test_event_catalogue_asyncapi_and_openapi_are_current() -> None:
    apps = build_apps()
    assert (DOCS / "events.md").read_text() == docs.event_catalogue(apps) + "\n", HINT
    assert json.loads((DOCS / "asyncapi.json").read_text()) == docs.asyncapi(apps), HINT
    assert (DOCS / "permissions.md").read_text() == docs.permission_table(apps) + "\n", HINT
    for name, app in apps.items():
        assert json.loads((DOCS / "openapi" / f"{name}.json").read_text()) == docs.openapi(app), HINT


def test_asyncapi_documents_every_topic_each_service_publishes() -> None:
    document = docs.asyncapi(build_apps())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"leads", "deals", "engagement", "payments", "cancellations", "retention"} <= addresses
    assert {"LeadCaptured", "DealWon", "InvoiceIssued", "CancellationCompleted", "ClientTierChanged"} <= set(
        document["components"]["schemas"]
    )


def test_asyncapi_document_is_valid_against_the_official_schema() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    schemas = sorted((root / ".venv" / "share").glob("asyncapi-specs-*/package/schemas/3.0.0-without-$id.json"))
    assert schemas, "the AsyncAPI schema is fetched by `make tools` (npm pack @asyncapi/specs)"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--schemafile",
            str(schemas[-1]),
            str(DOCS / "asyncapi.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

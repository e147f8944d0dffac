"""An export's part travels in chunks well under a Kafka message's 1 MB (shared/exports.py) and
comes back together as it was: sections in order, an item bigger than a chunk and a large
e-mail sliced and rejoined."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from shared.events import ExportMail, ExportPart, make_event
from shared.exports import CHUNK_BYTES, assemble, jsonable, split


def test_a_big_part_travels_in_chunks_and_comes_back_whole() -> None:
    part = {
        "service": "nurture",
        "contact": {"name": "Nasrin Talebi", "budget": "9000.0000"},
        "messages": [{"n": n, "subject": f"Hello {n}", "body": "x" * 300} for n in range(3000)],
        "empty": [],
        "brief": "y" * 900_000,  # one value bigger than a chunk
        "notes": [{"text": "z" * 500_000}, {"text": "short"}],  # an item bigger than a chunk
    }
    eml = ("Subject: Welcome\r\n\r\n" + "body line\r\n" * 80_000).encode()
    mail = [
        ExportMail(filename="a.eml", content_base64=base64.b64encode(eml).decode()),
        ExportMail(filename="b.eml", content_base64=base64.b64encode(b"Subject: Hi\r\n\r\nshort").decode()),
    ]
    chunks = split(part, mail)
    assert len(chunks) > 10
    for number, (sections, files) in enumerate(chunks, start=1):
        event = make_event(
            "export.part",
            ExportPart(
                export_id=uuid.uuid4(), service="nurture", chunk=number, chunks=len(chunks), part=sections, mail=files
            ),
            producer="nurture",
            occurred_at=datetime.now(UTC),
        )
        assert len(event.model_dump_json().encode()) < CHUNK_BYTES + 20_000
    # Stored as leads stores them (JSON), then put back together.
    stored = [(json.loads(json.dumps(s)), [f.model_dump(mode="json") for f in files]) for s, files in chunks]
    back, files = assemble(stored)
    assert back == part
    assert files == {"a.eml": eml, "b.eml": b"Subject: Hi\r\n\r\nshort"}


def test_an_empty_part_is_one_chunk_and_money_stays_a_decimal_string() -> None:
    assert split({}) == [({}, [])]
    assert assemble(split({})) == ({}, {})
    assert jsonable({"amount": Decimal("1250.50"), "at": datetime(2031, 1, 2, tzinfo=UTC)}) == {
        "amount": "1250.50",
        "at": "2031-01-02T00:00:00+00:00",
    }

"""Exports on request (right of access and portability): the plumbing every service shares.

Leads asks (``export.requested``); each service answers with its part, a dict of sections, each
a row or a list of rows as JSON (``row``, ``rows``: every column as stored, money as decimal
strings, times RFC 3339), plus its audit rows about the person (``audit_rows``). ``answer``
cuts a part and its e-mails into ``export.part`` chunks that stay well under a Kafka message's
1 MB once sealed; leads keeps the chunks and ``assemble`` puts them back together. No business
rule lives here: what a part holds is each service's ``export.py``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import inspect, select

from shared.access.audit import audit_item
from shared.db import AuditRow
from shared.events import ExportMail, ExportPart
from shared.uow import UnitOfWork

# Who contributes a part, in the document's order; leads owns the request and adds its own.
SERVICES: tuple[str, ...] = ("leads", "nurture", "billing", "retention")
FORMAT = "clientflow.export"
FORMAT_VERSION = 1
# Raw JSON per chunk. Sealing (AES-GCM, then base64 in the envelope) adds about a third, the
# envelope a few hundred bytes: about 0.3 MB a message, far from the broker's 1 MB.
CHUNK_BYTES = 200_000
# A section item too big for one chunk travels as slices of its JSON text under this key.
PIECES = "_pieces"

Piece = tuple[dict[str, Any], list[ExportMail]]


def row(obj: Any) -> dict[str, Any]:
    """Every mapped column of a table row, as JSON values (money as decimal strings)."""
    values = {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}
    return jsonable(values)


def rows(objs: Iterable[Any]) -> list[dict[str, Any]]:
    return [row(obj) for obj in objs]


def jsonable(value: Any) -> Any:
    """``value`` as JSON values: decimals as strings (never floats), times RFC 3339, ids as text."""
    return jsonable_encoder(value, custom_encoder={Decimal: str})


async def audit_rows(tx: UnitOfWork, lead_id: uuid.UUID) -> list[dict[str, Any]]:
    """This service's audit trail about the person: who read or changed their record, when."""
    found = await tx.session.scalars(select(AuditRow).where(AuditRow.lead_id == lead_id).order_by(AuditRow.id))
    return [audit_item(r).model_dump(mode="json") for r in found]


def answer(
    tx: UnitOfWork,
    *,
    export_id: uuid.UUID,
    lead_id: uuid.UUID,
    service: str,
    part: dict[str, Any],
    mail: Sequence[ExportMail] = (),
) -> int:
    """Emit the service's part of an export as ``export.part`` chunks; returns how many."""
    whole = {"service": service, "gathered_at": tx.now().isoformat(), **part}
    pieces = split(whole, mail)
    for number, (sections, files) in enumerate(pieces, start=1):
        tx.emit(
            "export.part",
            ExportPart(
                export_id=export_id, service=service, chunk=number, chunks=len(pieces), part=sections, mail=files
            ),
            lead_id=lead_id,
        )
    return len(pieces)


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def split(part: Mapping[str, Any], mail: Sequence[ExportMail] = (), *, budget: int = CHUNK_BYTES) -> list[Piece]:
    """Cut a part into chunks of about ``budget`` bytes of JSON: sections whole where they fit,
    a list section item by item (in order), an item bigger than a chunk as slices of its JSON
    text, an e-mail as slices of its base64 text. Always at least one chunk."""
    out: list[Piece] = []
    sections: dict[str, Any] = {}
    files: list[ExportMail] = []
    used = 0

    def flush() -> None:
        nonlocal sections, files, used
        if sections or files:
            out.append((sections, files))
        sections, files, used = {}, [], 0

    def room(size: int) -> None:
        nonlocal used
        if used + size > budget:
            flush()
        used += size

    def sliced(key: str, value: Any, *, listed: bool) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        slices = [text[i : i + budget // 4] for i in range(0, len(text), budget // 4)]  # 4 bytes a char at most
        flush()
        for number, piece in enumerate(slices, start=1):
            entry = {"section": key, "list": listed, "piece": number, "pieces": len(slices), "json": piece}
            out.append(({PIECES: [entry]}, []))

    for key, value in part.items():
        if not isinstance(value, list) or not value:
            size = _size(value) + len(key)
            if size > budget:
                sliced(key, value, listed=False)
                continue
            room(size)
            sections[key] = value
            continue
        for item in value:
            size = _size(item) + len(key)
            if size > budget:
                sliced(key, item, listed=True)
                continue
            room(size)
            sections.setdefault(key, []).append(item)
    step = budget - 400  # room for the file name and the JSON around a slice
    for mailed in mail:
        text = mailed.content_base64
        for start in range(0, max(len(text), 1), step):
            room(min(len(text) - start, step) + len(mailed.filename) + 40)
            files.append(ExportMail(filename=mailed.filename, content_base64=text[start : start + step]))
    flush()
    return out or [({}, [])]


def assemble(
    chunks: Iterable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any] | ExportMail]]],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A service's part and its e-mails (file name to .eml bytes) from its chunks, in order."""
    part: dict[str, Any] = {}
    mail: dict[str, str] = {}
    pending: dict[str, list[str]] = {}
    for sections, files in chunks:
        for key, value in sections.items():
            if key == PIECES:
                for entry in value:
                    texts = pending.setdefault(entry["section"], [])
                    texts.append(entry["json"])
                    if entry["piece"] == entry["pieces"]:
                        item = json.loads("".join(pending.pop(entry["section"])))
                        if entry["list"]:
                            part.setdefault(entry["section"], []).append(item)
                        else:
                            part[entry["section"]] = item
            elif isinstance(value, list):
                part.setdefault(key, []).extend(value)
            else:
                part[key] = value
        for file in files:
            mailed = file if isinstance(file, ExportMail) else ExportMail.model_validate(file)
            mail[mailed.filename] = mail.get(mailed.filename, "") + mailed.content_base64
    return part, {name: base64.b64decode(text) for name, text in mail.items()}

"""CSV intake: each data row becomes a validated lead or the list of what is wrong with it.

Columns carry the JSON names of a lead (``name``, ``email``, ``channel``...). ``needs`` is a
list separated by ``;`` or ``|``; UTM tags are ``utm_source``, ``utm_medium``, ``utm_campaign``,
``utm_term``, ``utm_content``; ``consent_marketing`` is yes/no, true/false or 1/0; an empty cell
is no value. Unknown columns are ignored (and named in the report)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from pydantic import ValidationError

from services.leads.commands import LeadIn

REQUIRED = ("name", "email", "channel")
FIELDS = set(LeadIn.model_fields) - {"utm"}
UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_TRUE = {"yes", "y", "true", "1", "x"}
_FALSE = {"no", "n", "false", "0", ""}


class ImportError_(ValueError):
    """The file as a whole cannot be read (not CSV, no header, required columns missing)."""


def parse(text: str, *, first_row: int = 1, max_rows: int) -> tuple[list[tuple[int, LeadIn | list[str]]], list[str]]:
    """Rows numbered from ``first_row`` (1 = first data row of the whole file) and the ignored columns."""
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportError_(f"not a readable CSV file: {exc}") from exc
    if not header or not any(h.strip() for h in header):
        raise ImportError_("the file is empty: the first line must be a header naming the columns")
    columns = [h.strip().lower().lstrip("\ufeff") for h in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ImportError_(f"missing required column(s): {', '.join(missing)} (header: {', '.join(columns)})")
    ignored = sorted({c for c in columns if c and c not in FIELDS and c not in UTM and c != "utm"})
    rows: list[tuple[int, LeadIn | list[str]]] = []
    number = first_row - 1
    try:
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue  # blank lines are not rows
            number += 1
            if len(rows) >= max_rows:
                raise ImportError_(f"more than {max_rows} rows: split the file (the command line does it for you)")
            rows.append((number, _row(columns, cells)))
    except csv.Error as exc:
        raise ImportError_(f"CSV broken after data row {number}: {exc}") from exc
    return rows, ignored


def _row(columns: list[str], cells: list[str]) -> LeadIn | list[str]:
    if len(cells) != len(columns):
        return [f"row has {len(cells)} fields, the header has {len(columns)} (an unquoted comma?)"]
    raw = {c: v.strip() for c, v in zip(columns, cells, strict=True) if c}
    data: dict[str, Any] = {k: v for k, v in raw.items() if k in FIELDS and v != ""}
    errors: list[str] = []
    if "needs" in data:
        data["needs"] = [n.strip() for n in re.split(r"[;|]", data["needs"]) if n.strip()]
    if "consent_marketing" in raw:
        value = raw["consent_marketing"].lower()
        if value in _TRUE:
            data["consent_marketing"] = True
        elif value in _FALSE:
            data["consent_marketing"] = False
        else:
            errors.append(f"consent_marketing: {raw['consent_marketing']!r} is not yes/no")
    utm = {k[4:]: raw[k] for k in UTM if raw.get(k)}
    if raw.get("utm"):
        for part in raw["utm"].split("&"):
            key, _, value = part.partition("=")
            if key.strip() and value.strip():
                utm[key.strip().removeprefix("utm_")] = value.strip()
    data["utm"] = utm
    try:
        lead = LeadIn.model_validate(data)
    except ValidationError as exc:
        errors += [describe(err) for err in exc.errors()]
    return errors if errors else lead


def describe(err: Any) -> str:
    """One pydantic error as ``field: message``, as a person reading the report wants it."""
    where = ".".join(str(p) for p in err["loc"]) or "row"
    message = err["msg"].removeprefix("Value error, ")
    if err["loc"] and err["type"] == "missing":
        message = "required"
    given = err.get("input")
    if err["type"] in ("decimal_parsing", "int_parsing", "decimal_type") and isinstance(given, str):
        message = f"{given!r} is not a number"
    return f"{where}: {message}"

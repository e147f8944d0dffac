"""Sequences as data: the sequences in force are the built-in files with those written through
``PUT /sequences/{name}`` in their place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select

from services.nurture import domain
from services.nurture.content import parse_sequence
from services.nurture.store import SequenceDefinition
from shared.errors import Invalid, NotFound
from shared.uow import UnitOfWork

# The catalog in force, kept in ``tx.memo`` for the rest of the transaction.
_CATALOG_MEMO = "nurture.catalog"


async def current_catalog(tx: UnitOfWork, builtin: domain.Catalog) -> domain.Catalog:
    """The built-in sequences with those written through the API in their place. Read per
    transaction (the table is small) so every instance sees a PUT at once; once per transaction,
    not once per event of a consumed batch."""
    memo = tx.memo.get(_CATALOG_MEMO)
    if memo is not None and memo[0] is builtin:
        return memo[1]
    rows = list(await tx.session.scalars(select(SequenceDefinition)))
    catalog = builtin
    if rows:
        custom = {row.name: parse_sequence(row.definition) for row in rows}
        catalog = domain.Catalog.of([*(s for n, s in builtin.sequences.items() if n not in custom), *custom.values()])
    tx.memo[_CATALOG_MEMO] = (builtin, catalog)
    return catalog


@dataclass(frozen=True)
class StoredSequence:
    """A sequence in force and where it came from: a built-in file or the API."""

    sequence: domain.Sequence
    source: Literal["builtin", "api"]


async def get_sequence(tx: UnitOfWork, builtin: domain.Catalog, name: str) -> StoredSequence:
    """The sequence in force named ``name`` (404 when there is none)."""
    catalog = await current_catalog(tx, builtin)
    sequence = catalog.sequences.get(name)
    if sequence is None:
        raise NotFound(f"no sequence named {name!r}")
    custom = await tx.session.get(SequenceDefinition, name)
    return StoredSequence(sequence, "api" if custom is not None else "builtin")


async def list_sequences(tx: UnitOfWork, builtin: domain.Catalog) -> list[StoredSequence]:
    """Every sequence in force, by name."""
    catalog = await current_catalog(tx, builtin)
    return [await get_sequence(tx, builtin, name) for name in sorted(catalog.sequences)]


async def put_sequence(
    tx: UnitOfWork,
    builtin: domain.Catalog,
    *,
    name: str,
    definition: dict[str, Any],
    missing_templates: Callable[[set[str]], list[str]],
) -> domain.Sequence:
    """Validate and store a sequence definition; refused (422) with the reason: an unknown
    trigger, a bad delay, a missing template, a cycle through ``then``. New enrollments use it;
    steps already scheduled keep the plan they were made with."""
    definition = {**definition, "name": definition.get("name", name)}
    if definition["name"] != name:
        raise Invalid(f"the body names {definition['name']!r} but the path names {name!r}")
    try:
        sequence = parse_sequence(definition)
        missing = missing_templates({step.template for step in sequence.steps})
        if missing:
            raise domain.SequenceError(f"{name}: template(s) {', '.join(missing)} do not exist")
        (await current_catalog(tx, builtin)).replaced(sequence)
    except domain.SequenceError as exc:
        raise Invalid(str(exc)) from None
    row = await tx.session.get(SequenceDefinition, name)
    if row is None:
        tx.session.add(SequenceDefinition(name=name, definition=definition, updated_at=tx.now()))
    else:
        row.definition = definition
        row.updated_at = tx.now()
    tx.memo.pop(_CATALOG_MEMO, None)
    return sequence

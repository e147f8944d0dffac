"""Insert-only rows (timeline entries, stage history, touches, red flags) written as one
multi-row INSERT per table and flush instead of one INSERT each.

The use cases keep adding these rows as ORM objects (``tx.session.add``), so reads, rollbacks,
savepoints and autoflush behave as before. What changes is how a flush writes them: SQLAlchemy
sends one ``INSERT ... RETURNING id`` per object on SQLite, since it cannot tell which returned
id belongs to which row of a multi-row INSERT there; these rows' ids are never read back, so the
session hands them to a Core executemany instead. Measured on the leads backlog profile (3,000
events, SQLite): 1.7 ``lead_activity`` INSERTs per event became one per table and batch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, event, insert, inspect
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.sql.elements import ClauseElement

from services.leads.store import Activity, Lead, LeadRedFlag, StageChange, Touch

# Rows nobody reads back as objects: each use case adds them and forgets them.
INSERT_ONLY: tuple[type[Any], ...] = (Activity, StageChange, Touch, LeadRedFlag)
_TAKEN = "leads.insert_only"


class _Columns:
    """How one insert-only class maps to its table's columns, as the ORM's INSERT would."""

    def __init__(self, cls: type[Any]) -> None:
        mapper = inspect(cls)
        self.table: Table = mapper.local_table
        self.by_attribute = {prop.key: prop.columns[0] for prop in mapper.column_attrs}
        # The ORM leaves a None out of the INSERT (the column's default applies) except where
        # the type stores None as a value of its own (JSON's null).
        self.keeps_none = {c.key for c in self.table.columns if c.type.should_evaluate_none}
        self.lead_key = "lead_id"
        # ... and sends an explicit NULL for a column with no default at all (as the ORM does):
        # rows of one table then give the same columns and share one INSERT.
        self.as_none = [
            c.key
            for c in self.table.columns
            if not c.primary_key and c.default is None and c.server_default is None and c.key not in self.keeps_none
        ]

    def params(self, obj: Any) -> dict[str, Any] | None:
        """The INSERT's values for ``obj``, or None when only the ORM can write it (a SQL
        expression for a value, a relationship set instead of its key, an id given)."""
        state = obj.__dict__
        if self.lead_key not in state:
            return None
        values: dict[str, Any] = {}
        for key, column in self.by_attribute.items():
            if key not in state:
                continue
            value = state[key]
            if value is None and column.key not in self.keeps_none:
                continue
            if column.primary_key or isinstance(value, ClauseElement):
                return None
            values[column.key] = value
        for key in self.as_none:
            values.setdefault(key, None)
        return values


_COLUMNS = {cls: _Columns(cls) for cls in INSERT_ONLY}
# Each table's INSERT, built once with its cache key (it was built anew for every flush).
_INSERTS = {columns.table: insert(columns.table) for columns in _COLUMNS.values()}


class LeadsSession(Session):
    """The leads service's session: insert-only rows go out as one INSERT per table and flush."""


@event.listens_for(LeadsSession, "before_flush")
def _take_insert_only(session: Session, _flush: UOWTransaction, instances: Iterable[Any] | None) -> None:
    """Take the insert-only rows out of the flush (in the order they were added); they are
    written once the flush has written everything else (their leads first, new ones too)."""
    if instances is not None:
        return  # a flush of some objects only: their leads may stay pending, the ORM orders it
    taken: list[tuple[int, Table, dict[str, Any], Any]] = []
    for obj in session.new:
        columns = _COLUMNS.get(type(obj))
        if columns is None:
            continue
        values = columns.params(obj)
        if values is not None:
            taken.append((inspect(obj).insert_order or 0, columns.table, values, obj))
    if not taken:
        session.info.pop(_TAKEN, None)
        return
    taken.sort(key=lambda t: t[0])
    for *_, obj in taken:
        session.expunge(obj)
    rows = [(table, values) for _, table, values, _ in taken]
    if any(isinstance(obj, Lead) for obj in session.new):
        # Their leads are inserted by this flush: after it (a new lead makes sure it runs on).
        session.info[_TAKEN] = rows
    else:
        # Every lead they name is in the database already: now, whatever else this flush does
        # (a flush with nothing left to write ends before its after_flush).
        session.info.pop(_TAKEN, None)
        _write(session, rows)


@event.listens_for(LeadsSession, "after_flush")
def _write_taken(session: Session, _flush: UOWTransaction) -> None:
    rows = session.info.pop(_TAKEN, None)
    if rows:
        _write(session, rows)


def _write(session: Session, rows: list[tuple[Table, dict[str, Any]]]) -> None:
    """One executemany per table and run of rows giving the same columns, each table's rows in
    the order they were added (their ids, which order a timeline, follow it)."""
    by_table: dict[Table, list[dict[str, Any]]] = {}
    for table, values in rows:
        by_table.setdefault(table, []).append(values)
    connection = session.connection()
    for table, params in by_table.items():
        start = 0
        for end in range(1, len(params) + 1):
            if end == len(params) or params[end].keys() != params[start].keys():
                connection.execute(_INSERTS[table], params[start:end])
                start = end

"""Grown history for the 100x round, written straight into the service databases.

Producing a million events through the services would take hours, so the history of the 1x
round (every row its backlog and load steps left: leads, touches, enrollments, invoices,
inbox and outbox rows...) is copied and multiplied with bulk ``INSERT ... SELECT``: each copy
of a row keeps its content (so indexes see realistic values and spreads) and gets fresh
values in its primary key and unique columns. The inbox, which every applied event grows by
one row, is multiplied up to ``rows`` (default one million: the largest table); every other
table that grew with the workload (100 rows or more; settings and counters stay as they are)
up to ``factor`` times its size, at most ``rows // 10`` (a run's budget: the copies are
written at about 40,000 rows/s on SQLite). A table whose copy breaks a
constraint is left as it is and named in the result.

SQLite only (the default database); on PostgreSQL the round runs on the 1x history as it is.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

MIN_ROWS = 100  # below this a table holds settings, counters or seeds, not history


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite+aiosqlite:///...`` URL; None for any other database."""
    if not url.startswith("sqlite"):
        return None
    return Path(url.split(":///", 1)[1])


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (the backup API, so the WAL is included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _columns(db: sqlite3.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, declared type, part of the primary key) of each column."""
    return [(row[1], (row[2] or "").upper(), bool(row[5])) for row in db.execute(f'PRAGMA table_info("{table}")')]


def _unique_columns(db: sqlite3.Connection, table: str) -> list[set[str]]:
    """The column sets that must stay unique: the primary key and every unique index."""
    sets = []
    pk = {name for name, _, in_pk in _columns(db, table) if in_pk}
    if pk:
        sets.append(pk)
    for row in db.execute(f'PRAGMA index_list("{table}")'):
        if row[2]:  # unique
            sets.append({info[2] for info in db.execute(f'PRAGMA index_info("{row[1]}")') if info[2]})
    return sets


def _fresh(column: str, kind: str) -> str | None:
    """An SQL expression giving a new, unique value for ``column`` of declared type ``kind``."""
    if kind == "CHAR(32)":  # SQLAlchemy's Uuid on SQLite: 32 hex digits
        return "lower(hex(randomblob(16)))"
    if "CHAR" in kind or "TEXT" in kind or kind == "":
        return f"substr(\"{column}\", 1, 180) || '~' || lower(hex(randomblob(6)))"
    return None


def _copy_statement(db: sqlite3.Connection, table: str) -> str | None:
    """``INSERT INTO t SELECT`` copying rows with fresh unique values; None if not possible."""
    columns = _columns(db, table)
    pk = [name for name, _, in_pk in columns if in_pk]
    kinds = {name: kind for name, kind, _ in columns}
    # An INTEGER PRIMARY KEY of its own is the rowid: left out, SQLite numbers the copies.
    rowid = pk[0] if len(pk) == 1 and kinds[pk[0]] in ("INTEGER", "BIGINT") else None
    replaced: dict[str, str] = {}
    for unique in _unique_columns(db, table):
        if rowid is not None and unique == {rowid}:
            continue
        fresh = {c: _fresh(c, kinds.get(c, "")) for c in unique}
        usable = {c: e for c, e in fresh.items() if e is not None}
        if not usable:
            return None  # nothing in this key can be made new (dates, numbers): do not copy
        replaced.update(usable)
    names = [name for name, _, _ in columns if name != rowid]
    targets = ", ".join(f'"{n}"' for n in names)
    values = ", ".join(replaced.get(n, f'"{n}"') for n in names)
    return f'INSERT INTO "{table}" ({targets}) SELECT {values} FROM "{table}" LIMIT ?'


def multiply(path: Path, *, factor: int, rows: int, inbox: str = "inbox") -> dict:
    """Grow the database at ``path`` as described in the module docstring; returns, per table,
    the rows before and after (and the tables left alone, with why)."""
    started = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    grown: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA foreign_keys=OFF")  # copies of children keep pointing at real parents
        tables = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
            if r[0] != "alembic_version"
        ]
        for table in tables:
            (before,) = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            if before < MIN_ROWS:
                continue
            goal = rows if table == inbox else min(before * factor, rows // 10)
            if goal <= before:
                continue
            statement = _copy_statement(db, table)
            if statement is None:
                skipped[table] = "no unique column that can take a fresh value"
                continue
            count = before
            try:
                db.execute("BEGIN")
                while count < goal:
                    db.execute(statement, (min(count, goal - count),))
                    (count,) = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                db.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                db.execute("ROLLBACK")
                skipped[table] = re.sub(r"\s+", " ", str(error))[:120]
                continue
            grown[table] = {"before": before, "after": count}
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("ANALYZE")
    finally:
        db.close()
    largest = max(grown.items(), key=lambda kv: kv[1]["after"], default=(None, {"after": 0}))
    return {
        "tables": grown,
        "skipped": skipped,
        "largest_table": largest[0],
        "largest_rows": largest[1]["after"],
        "seconds": time.monotonic() - started,
        "bytes": path.stat().st_size,
    }


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

"""Database plumbing: engine factory, portable column types, and the tables every service has
(outbox, inbox, idempotency keys, key-value state). Business tables live in each service."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared import sqlite_inline, sqlite_upkeep

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: business time is always UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact decimals: NUMERIC on PostgreSQL, text on SQLite (whose NUMERIC is a float)."""

    impl = Numeric(20, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(48))
        return dialect.type_descriptor(Numeric(20, 4))

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> Any:
        if value is None:
            return None
        return format(Decimal(value), "f") if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value).normalize() if dialect.name != "sqlite" else Decimal(value)


class PlumbingBase(DeclarativeBase):
    """Tables of the reliability rules; every service's database has them."""

    metadata = MetaData(naming_convention=NAMING)


class OutboxRow(PlumbingBase):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # A unique value known before the insert: lets SQLAlchemy insert a batch's outbox rows in
    # one multi-row INSERT ... RETURNING on SQLite too (it matches the returned ids by it).
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True, insert_sentinel=True, default=uuid.uuid4)
    topic: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(default=0)

    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)


class InboxRow(PlumbingBase):
    """Event ids already applied, written in the same transaction as their effects."""

    __tablename__ = "inbox"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyKeyRow(PlumbingBase):
    """First answer to an HTTP write, replayed for a repeat with the same Idempotency-Key."""

    __tablename__ = "idempotency_keys"

    # "<caller>:<key>": keys are scoped to who sent them, as Stripe scopes them to an account,
    # so nobody can replay, probe or claim another caller's key.
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # in_progress | done
    status_code: Mapped[int | None] = mapped_column(default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AccessPerson(PlumbingBase):
    """A person (or integration account) as this service knows it: written by the registry's
    owner (leads) directly and folded from the ``people`` topic by every other service."""

    __tablename__ = "access_people"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="person")
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(default=True)
    revision: Mapped[int] = mapped_column(default=1)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AccessToken(PlumbingBase):
    """A personal token: its SHA-256 digest only; the token itself is shown once and never kept."""

    __tablename__ = "access_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(40))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revision: Mapped[int] = mapped_column(default=1)


class AuditRow(PlumbingBase):
    """Who did what to whom, one row per write and per read of one person's record. Append-only
    (a trigger refuses UPDATE and DELETE); it names people by id only, so an erasure leaves it
    without personal data."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_kind: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(String(100))
    actor_role: Mapped[str | None] = mapped_column(String(20), default=None)
    action: Mapped[str] = mapped_column(String(200))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    request_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    status: Mapped[int] = mapped_column()

    __table_args__ = (
        Index("ix_audit_log_lead", "lead_id", "id"),
        Index("ix_audit_log_actor", "actor_id", "id"),
        Index("ix_audit_log_at", "at"),
    )


class StateRow(PlumbingBase):
    """Small named values a service must keep across restarts (the simulated clock's time)."""

    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def create_engine(url: str, *, echo: bool = False, read_only: bool = False) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and write-locking transactions
    (``read_only``: deferred ones that never take the write lock, for shared.reads)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if read_only:
            return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=4, max_overflow=4)
        return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)

    database = parsed.database or ""
    inline = bool(database) and database != ":memory:"
    upkeep = None
    if inline:
        # A file database: calls run on the loop rather than on aiosqlite's thread (see
        # shared.sqlite_inline for the measurement), waiting for the write lock asynchronously;
        # checkpoints and statistics are a thread's (shared.sqlite_upkeep).
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        upkeep = sqlite_upkeep.acquire(str(Path(database).resolve()))
        engine = create_async_engine(url, echo=echo, async_creator=sqlite_inline.creator(database))
    else:
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (so BEGIN IMMEDIATE works).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Inline, SQLite must not sleep on the loop for the lock: the driver retries instead.
        cursor.execute(f"PRAGMA busy_timeout={0 if inline else 30000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    if upkeep is not None:

        @event.listens_for(engine.sync_engine, "engine_disposed")
        def _on_dispose(_engine: Any) -> None:
            nonlocal upkeep
            if upkeep is not None:
                sqlite_upkeep.release(upkeep)
                upkeep = None

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if upkeep is not None and sqlite_upkeep.stale(conn.connection.info, upkeep):
            # Reload the planner's statistics (it writes nothing, but query_only refuses it).
            if read_only:
                conn.exec_driver_sql("PRAGMA query_only=OFF")
            conn.exec_driver_sql("ANALYZE sqlite_schema")
            if read_only:
                conn.exec_driver_sql("PRAGMA query_only=ON")
        # Take the write lock up front: a deferred transaction that later writes can fail with
        # SQLITE_BUSY at once, which busy_timeout does not cover. Readers never write.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def statement_log(engine: AsyncEngine) -> list[str]:
    """Every SQL statement ``engine`` sends from now on (whitespace collapsed; BEGIN and PRAGMA
    left out, and the planner's statistics reloads): what a profile of time alone hides, many cheap statements per event. The
    benchmark's profiler and the batching tests count them."""
    statements: list[str] = []

    def _log(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("BEGIN", "PRAGMA", "ANALYZE")):
            statements.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", _log)
    return statements


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


class JobFailureRow(PlumbingBase):
    """A record a scheduled job failed on (``shared.jobs``): why, how many times, when it is
    tried again, and whether the job gave up on it. The row goes when the record succeeds; a
    record given up waits for someone to fix it and delete its row."""

    __tablename__ = "job_failures"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=1)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    given_up: Mapped[bool] = mapped_column(default=False)


async def ensure_row(session: AsyncSession, model: Any, values: dict[str, Any]) -> None:
    """Insert the row unless its key exists, in one statement and without failing the
    transaction on a race (two instances creating the same counter row at once, an event
    applied again): SQLite's and PostgreSQL's ``ON CONFLICT DO NOTHING``."""
    await session.execute(_insert_ignoring(session.get_bind().dialect.name, model), values)


@functools.cache
def _insert_ignoring(dialect: str, model: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``model``, built once (its values come as
    parameters: building the statement with its values was half of a call's time)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).on_conflict_do_nothing()

"""SQLite for the async engine without a thread hop per call.

aiosqlite runs every call (execute, fetch, close, commit) on a helper thread and wakes the
event loop when it is done. Measured on the benchmark machine that costs about 220 us per
call against 4 us for the same insert done directly, and SQLAlchemy makes several such calls
per statement, so the services spent most of a consumed event waiting on thread hand-offs
(``make bench``: 4-8 ms of database time per event). A local SQLite file answers in
microseconds, so this driver runs the calls inline, on the loop, behind aiosqlite's interface
(which SQLAlchemy's ``sqlite+aiosqlite`` dialect adapts through ``async_creator``).

The one call that can wait long is taking the write lock held by another connection: the
driver does not let SQLite's busy handler sleep on the loop; it asks SQLite not to wait
(``busy_timeout`` 0) and retries ``SQLITE_BUSY`` with an asynchronous back-off, so the
connection that holds the lock can finish meanwhile, up to ``busy_timeout_s``.

Writers of one file in one process do not poll for the lock against each other: a write
transaction (``BEGIN IMMEDIATE``) first takes the file's :class:`WriteGate`, an asyncio lock
handed over in arrival order the moment the previous writer commits. Polling with back-off
left the lock idle for up to the back-off after every commit and spent CPU on retries: at 8
concurrent HTTP writes intake fell to half its one-at-a-time rate. The retry stays for
writers the gate does not see (another process, a checkpoint).

Inline calls never suspend, so a long run of them (a flush of a 500-event batch, a chunk of an
import) would hold the loop for its whole length: a health probe beside it waited seconds. The
driver therefore gives the loop a turn (``asyncio.sleep(0)``) once it has run inline for
``SLICE_S`` without one, so nothing else waits longer than about one slice plus one statement.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

log = logging.getLogger(__name__)

BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
# How long inline calls may run before the loop gets a turn.
SLICE_S = 0.002


class _Slice(threading.local):
    """Inline calls since the loop last had a turn (per thread, as each thread has its loop).

    A run starts with a marker queued on the loop (``call_soon``); while the marker has not run,
    the loop has had no turn, and once the run is older than ``SLICE_S`` the next call yields."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pending = False

    def _turn(self) -> None:
        self.pending = False

    async def check(self) -> None:
        now = time.perf_counter()
        if not self.pending:
            self.pending = True
            self.started = now
            asyncio.get_running_loop().call_soon(self._turn)
        elif now - self.started > SLICE_S:
            await asyncio.sleep(0)


_slice = _Slice()


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in BUSY_CODES or "database is locked" in str(exc)


async def _retry_busy(call: Callable[[], Any], timeout_s: float) -> Any:
    await _slice.check()
    deadline = time.monotonic() + timeout_s
    pause = 0.0005
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


# The write gates, per event loop (a lock belongs to its loop) and database file.
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, WriteGate]] = weakref.WeakKeyDictionary()

# How often a writer waiting at the gate checks that the one holding it is still writing.
GATE_CHECK_S = 1.0


class WriteGate(asyncio.Lock):
    """The write transactions of one database file on one event loop, one at a time, in the
    order they asked: an asyncio lock that knows which connection holds it."""

    holder: weakref.ref[InlineConnection] | None = None

    @classmethod
    def of(cls, database: str) -> WriteGate:
        gates = _GATES.setdefault(asyncio.get_running_loop(), {})
        gate = gates.get(database)
        if gate is None:
            gate = gates[database] = cls()
        return gate

    def held_by_a_writer(self) -> bool:
        """False when the holder is gone or no longer in a transaction: a connection dropped
        without its commit or rollback (garbage-collected, say) must not keep every other
        writer of the process waiting."""
        holder = self.holder() if self.holder is not None else None
        if holder is None or holder._conn is None:
            return False
        return holder._beginning or holder._conn.in_transaction


def _begins_write(sql: str) -> bool:
    return sql.lstrip()[:15].upper() == "BEGIN IMMEDIATE"


class InlineCursor:
    """aiosqlite's ``Cursor`` interface over a ``sqlite3.Cursor``, run inline."""

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        assert connection._conn is not None
        self._cursor = connection._conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        args = () if parameters is None else parameters
        if _begins_write(sql):
            connection = self._connection
            await connection._enter_gate()
            connection._beginning = True
            try:
                await _retry_busy(lambda: self._cursor.execute(sql, args), connection.busy_timeout_s)
            except BaseException:
                connection._leave_gate()
                raise
            finally:
                connection._beginning = False
            return self
        await _retry_busy(lambda: self._cursor.execute(sql, args), self._connection.busy_timeout_s)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(parameters)
        await _retry_busy(lambda: self._cursor.executemany(sql, rows), self._connection.busy_timeout_s)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        for row in self._cursor:
            yield row

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _Immediate:
    """Stands in for aiosqlite's request queue: SQLAlchemy sets ``isolation_level`` by queueing
    a function with a future; here the function runs at once."""

    def put_nowait(self, item: tuple[asyncio.Future, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to whoever awaits the future
            future.set_exception(exc)


class InlineConnection:
    """aiosqlite's ``Connection`` interface over a ``sqlite3.Connection``, run inline."""

    def __init__(self, conn: sqlite3.Connection, *, database: str, busy_timeout_s: float) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.database = database
        self.busy_timeout_s = busy_timeout_s
        self._tx = _Immediate()
        self._gate: WriteGate | None = None  # held from BEGIN IMMEDIATE to commit or rollback
        self._beginning = False  # executing BEGIN IMMEDIATE (another process may hold the lock)

    async def _enter_gate(self) -> None:
        if self._gate is not None:
            return
        gate = WriteGate.of(self.database)
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 a wait_for that times out just as the
                # lock is granted can leave it taken by nobody.
                async with asyncio.timeout(min(GATE_CHECK_S, max(0.0, deadline - time.monotonic()))):
                    await gate.acquire()
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    # What SQLite itself says when its lock is not free in time.
                    raise sqlite3.OperationalError(
                        "database is locked (waited for this process's other writers)"
                    ) from None
                if gate.locked() and not gate.held_by_a_writer():
                    log.warning("sqlite write gate of %s was held by a connection no longer writing", self.database)
                    gate.holder = None
                    gate.release()
        gate.holder = weakref.ref(self)
        self._gate = gate

    def _leave_gate(self) -> None:
        gate, self._gate = self._gate, None
        # Only if still ours (a gate taken back from a connection that stopped writing may be
        # another writer's by now).
        if gate is not None and gate.locked() and gate.holder is not None and gate.holder() is self:
            gate.holder = None
            gate.release()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self._conn

    def cursor(self) -> InlineCursor:
        assert self._conn is not None, "connection closed"
        return InlineCursor(self)

    async def commit(self) -> None:
        assert self._conn is not None
        try:
            await _retry_busy(self._conn.commit, self.busy_timeout_s)
        finally:
            if not self._conn.in_transaction:
                self._leave_gate()

    async def rollback(self) -> None:
        assert self._conn is not None
        try:
            self._conn.rollback()
        finally:
            self._leave_gate()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._leave_gate()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def create_function(self, *args: Any, **kw: Any) -> None:
        assert self._conn is not None
        self._conn.create_function(*args, **kw)

    @property
    def isolation_level(self) -> str | None:
        assert self._conn is not None
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        assert self._conn is not None
        # typeshed lists the upper-case levels only; sqlite3 also takes "" and any case, and
        # SQLAlchemy hands over what it was configured with.
        self._conn.isolation_level = cast("Literal['DEFERRED', 'EXCLUSIVE', 'IMMEDIATE'] | None", value)


def creator(database: str, *, busy_timeout_s: float = 30.0) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` on the ``sqlite+aiosqlite`` dialect."""

    path = str(Path(database).resolve())  # the gate's name: one file, however it is spelled

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(database, timeout=0, isolation_level=None, check_same_thread=False)
        return InlineConnection(conn, database=path, busy_timeout_s=busy_timeout_s)

    return connect

"""The inline SQLite driver: the engine's calls run on the loop's thread, a held write lock is
waited for without blocking the loop, and transactions still commit or roll back as one."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from shared import sqlite_inline
from shared.db import create_engine


async def test_statements_run_on_the_loop_thread_not_a_helper_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    threads: set[int] = set()
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: threads.add(threading.get_ident()))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
        raw = await engine.raw_connection()
        try:
            assert isinstance(raw.driver_connection, sqlite_inline.InlineConnection)
        finally:
            raw.close()
    finally:
        await engine.dispose()
    assert rows == ["a", "b"]
    assert threads == {threading.get_ident()}


async def test_a_rolled_back_transaction_leaves_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (id) VALUES (1)"))
                raise RuntimeError("handler failed")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    finally:
        await engine.dispose()


async def test_a_held_write_lock_is_waited_for_while_the_loop_keeps_running(tmp_path: Path) -> None:
    """Two connections of one process: the second transaction waits for the first one's
    commit, and meanwhile other coroutines (here a ticker) keep running."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    ticks = 0
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        first_has_lock = asyncio.Event()

        async def first() -> None:
            async with engine.begin() as conn:  # BEGIN IMMEDIATE takes the write lock
                await conn.execute(text("INSERT INTO t (who) VALUES ('first')"))
                first_has_lock.set()
                await asyncio.sleep(0.3)

        async def second() -> float:
            await first_has_lock.wait()
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (who) VALUES ('second')"))
            return loop.time() - started

        tick_task = asyncio.create_task(ticker())
        _, waited = await asyncio.gather(first(), second())
        tick_task.cancel()
        async with engine.connect() as conn:
            order = (await conn.execute(text("SELECT who FROM t ORDER BY id"))).scalars().all()
    finally:
        await engine.dispose()
    assert order == ["first", "second"]
    assert waited >= 0.2  # it really waited for the first commit
    assert ticks >= 20  # and the loop was free meanwhile (a blocking wait would allow about one)


async def test_writers_of_one_process_take_turns_in_order_without_polling_the_lock(tmp_path: Path) -> None:
    """Eight write transactions at once on one file: each starts the moment the one before
    commits, in the order they asked, and none meets SQLITE_BUSY (no back-off, no retries);
    a rollback and a failed statement hand the turn on as well."""
    import sqlite3

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    busy: list[str] = []
    original = sqlite_inline._busy

    def counting(exc: sqlite3.OperationalError) -> bool:
        busy.append(str(exc))
        return original(exc)

    sqlite_inline._busy = counting  # type: ignore[assignment]
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who INTEGER UNIQUE)"))
        asked: list[int] = []

        async def writer(n: int) -> None:
            await asyncio.sleep(0.001 * n)
            asked.append(n)
            with contextlib.suppress(RuntimeError, IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO t (who) VALUES (:n)"), {"n": n})
                    await asyncio.sleep(0.01)  # other writers queue meanwhile
                    if n == 3:
                        raise RuntimeError("rolled back")
                    if n == 5:
                        await conn.execute(text("INSERT INTO t (who) VALUES (:n)"), {"n": n})  # fails

        await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(8))), 10)
        async with engine.connect() as conn:
            order = (await conn.execute(text("SELECT who FROM t ORDER BY id"))).scalars().all()
    finally:
        sqlite_inline._busy = original  # type: ignore[assignment]
        await engine.dispose()
    assert order == [n for n in asked if n not in (3, 5)]
    assert busy == []


async def test_a_gate_left_by_a_connection_that_stopped_writing_is_taken_back(tmp_path: Path) -> None:
    """A connection whose transaction ended behind the driver's back (dropped without its
    commit or rollback) does not keep the process's other writers waiting for the timeout."""
    path = str(tmp_path / "inline.db")
    left = await sqlite_inline.creator(path, busy_timeout_s=10)()
    await left.cursor().execute("BEGIN IMMEDIATE")
    assert left._conn is not None
    left._conn.rollback()  # the transaction is over; the gate was never handed back
    writer = await sqlite_inline.creator(path, busy_timeout_s=10)()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writer.cursor().execute("BEGIN IMMEDIATE")
    waited = loop.time() - started
    await writer.commit()
    await writer.close()
    await left.close()
    assert waited < sqlite_inline.GATE_CHECK_S * 3  # not the 10 s timeout


async def test_the_wait_for_the_lock_gives_up_after_its_timeout(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "inline.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        connection = await sqlite_inline.creator(str(path), busy_timeout_s=0.2)()
        cursor = connection.cursor()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await cursor.execute("BEGIN IMMEDIATE")
        await connection.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_long_transaction_gives_the_loop_turns(tmp_path: Path) -> None:
    """Inline calls never suspend; without the driver's slices a long run of them (a flush of a
    500-event batch) held the loop for its whole length and a health probe waited seconds."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    turns: list[bool] = []
    in_transaction = False
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            turns.append(in_transaction)
            await asyncio.sleep(0)

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async with engine.begin() as conn:
            in_transaction = True
            for n in range(5000):  # one statement at a time, as a flush of many rows goes
                await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": f"row {n}"})
            in_transaction = False
        stop.set()
        await task
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 5000
    finally:
        await engine.dispose()
    assert sum(turns) > 0, "the loop had no turn during the transaction"

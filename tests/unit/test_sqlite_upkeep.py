"""SQLite's checkpoints and planner statistics happen on a thread of their own, and connections
pick the statistics up: found when nurture's "any step of this enrollment still pending" read every
pending step (the planner, without statistics, chose the status index) for 10 s of an import."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from shared import sqlite_upkeep
from shared.db import create_engine


async def test_statistics_reach_the_planner_of_an_open_connection(tmp_path) -> None:
    path = tmp_path / "upkeep.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE steps (id TEXT PRIMARY KEY, enrollment TEXT, step INT, status TEXT, due TEXT,"
                    " UNIQUE (enrollment, step))"
                )
            )
            await conn.execute(text("CREATE INDEX ix_steps_due ON steps (status, due)"))
            rows = [
                {
                    "id": uuid.uuid4().hex,
                    "enrollment": f"e{n // 3}",
                    "step": n % 3,
                    "status": "pending",
                    "due": "2026-01-01",
                }
                for n in range(30_000)
            ]
            await conn.execute(text("INSERT INTO steps VALUES (:id, :enrollment, :step, :status, :due)"), rows)
        query = (
            "EXPLAIN QUERY PLAN SELECT DISTINCT enrollment FROM steps WHERE enrollment IN ('e7') AND status = 'pending'"
        )
        async with engine.begin() as conn:
            before = " ".join(str(r) for r in (await conn.execute(text(query))).all())
        assert "ix_steps_due" in before  # what the planner guesses without statistics

        upkeep = sqlite_upkeep.acquire(str(path.resolve()))
        try:
            await asyncio.to_thread(lambda: upkeep.analyze(__import__("sqlite3").connect(path, isolation_level=None)))
            async with engine.begin() as conn:  # the same pooled connection, reloading at begin
                after = " ".join(str(r) for r in (await conn.execute(text(query))).all())
        finally:
            sqlite_upkeep.release(upkeep)
        assert "autoindex" in after and "ix_steps_due" not in after, after
    finally:
        await engine.dispose()


async def test_the_thread_checkpoints_and_stops_with_the_last_engine(tmp_path) -> None:
    path = tmp_path / "wal.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    upkeep = sqlite_upkeep._upkeeps[str(path.resolve())]
    upkeep.checkpoint_every_s = 0.05
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INT)"))
        await conn.execute(text("INSERT INTO t VALUES (1)"))
    for _ in range(100):
        if upkeep.checkpoints:
            break
        await asyncio.sleep(0.05)
    assert upkeep.checkpoints > 0 and upkeep.failures == 0
    await engine.dispose()
    assert str(path.resolve()) not in sqlite_upkeep._upkeeps
    assert upkeep._thread is not None and not upkeep._thread.is_alive()


def test_statistics_are_made_again_only_once_the_file_changed_size(tmp_path) -> None:
    """ANALYZE holds the write lock: on a large file that stays about the same size it is not
    run every round (each run held every writer for up to 0.7 s with 100x history)."""
    import sqlite3

    path = tmp_path / "grow.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INT, y TEXT)")
    conn.execute("CREATE INDEX ix_t ON t (x)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(n, "y" * 100) for n in range(2_000)])
    upkeep = sqlite_upkeep.Upkeep(str(path))
    assert upkeep.analyze_if_changed(conn)  # no statistics yet
    assert not upkeep.analyze_if_changed(conn)  # the same file
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(n, "y" * 100) for n in range(100)])
    assert not upkeep.analyze_if_changed(conn)  # 5% more: what the planner knows still holds
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(n, "y" * 100) for n in range(2_000)])
    assert upkeep.analyze_if_changed(conn) and upkeep.generation == 2  # twice the size
    conn.close()

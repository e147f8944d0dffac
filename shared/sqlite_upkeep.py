"""SQLite's housekeeping, kept off the event loop.

The services run SQLite inline on their loop (shared.sqlite_inline), so two kinds of work that
SQLite otherwise does on whichever connection happens to commit would hold the loop:

- **Checkpoints.** In WAL mode the commit that pushes the log past 1,000 pages copies it back
  into the database file and syncs it: tens of milliseconds, more under load. A thread of this
  module checkpoints every ``checkpoint_every_s``, passively (it never waits for readers or
  writers), so the log seldom reaches that size; SQLite's own checkpoint stays as the safety net
  should the thread be stopped or the writes outrun it.
- **Statistics.** Without ``ANALYZE`` the query planner guesses, and with two indexes of one
  equality each it may pick the one that reads every row of a status: nurture's "is any step of
  this enrollment still pending" walked all 20,000 pending steps (6 ms a call, 10 s of a 5,000-lead
  import on the loop) instead of the enrollment's three (30 us). The thread re-analyses every
  ``analyze_every_s`` (with ``analysis_limit``, a few milliseconds), and each connection reloads
  the statistics (``ANALYZE sqlite_schema``, a fraction of a millisecond) when its next
  transaction begins. Only once the file has grown or shrunk by a quarter since the statistics
  were made, though: ANALYZE holds the write lock while it runs, and on a file with 100x
  history (600 MB, a million-row inbox) each run held every writer for 270-745 ms, every 10 s,
  to find what it already knew.

The thread's calls run in SQLite's C code, outside the GIL, so the loop goes on meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ANALYSIS_LIMIT = 1000
# The file's size (in pages) changes by this factor before the statistics are made again.
REANALYZE_GROWTH = 1.25


@dataclass
class Upkeep:
    """One database file's upkeep thread and the statistics generation connections follow."""

    database: str
    checkpoint_every_s: float = 1.0
    analyze_every_s: float = 10.0
    first_analyze_s: float = 2.0
    generation: int = 0
    users: int = 0
    checkpoints: int = 0
    failures: int = 0
    analyzed_pages: int | None = None  # the file's page count when the statistics were made
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sqlite-upkeep:{self.database}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def analyze(self, conn: sqlite3.Connection) -> None:
        pages = _pages(conn)
        conn.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        conn.execute("ANALYZE")
        self.analyzed_pages = pages
        self.generation += 1

    def analyze_if_changed(self, conn: sqlite3.Connection) -> bool:
        """Make the statistics again if the file changed size enough since they were made."""
        last, pages = self.analyzed_pages, _pages(conn)
        if last is not None and last / REANALYZE_GROWTH <= pages <= last * REANALYZE_GROWTH:
            return False
        self.analyze(conn)
        return True

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _run(self) -> None:
        conn = sqlite3.connect(self.database, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            since_analyze = self.analyze_every_s - self.first_analyze_s
            while not self._stop.wait(self.checkpoint_every_s) and Path(self.database).exists():
                since_analyze += self.checkpoint_every_s
                try:
                    self.checkpoint(conn)
                    if since_analyze >= self.analyze_every_s:
                        since_analyze = 0.0
                        self.analyze_if_changed(conn)
                except sqlite3.Error as exc:
                    # Busy or a file gone away (a test's directory removed): try again next round;
                    # the inline connections keep working, only the log grows meanwhile.
                    self.failures += 1
                    log.warning("sqlite upkeep of %s failed: %s", self.database, exc)
        finally:
            conn.close()


def _pages(conn: sqlite3.Connection) -> int:
    """Pages in use (free pages left by deletes apart: the file does not shrink by itself)."""
    total = int(conn.execute("PRAGMA page_count").fetchone()[0])
    return total - int(conn.execute("PRAGMA freelist_count").fetchone()[0])


_upkeeps: dict[str, Upkeep] = {}
_lock = threading.Lock()


def acquire(database: str) -> Upkeep:
    """The upkeep of ``database`` in this process, started by its first user (an engine)."""
    with _lock:
        upkeep = _upkeeps.get(database)
        if upkeep is None:
            upkeep = _upkeeps[database] = Upkeep(database)
            upkeep.start()
        upkeep.users += 1
        return upkeep


def release(upkeep: Upkeep) -> None:
    """An engine is done with the database (disposed): its last user stops the thread."""
    with _lock:
        upkeep.users -= 1
        if upkeep.users > 0 or _upkeeps.get(upkeep.database) is not upkeep:
            return
        del _upkeeps[upkeep.database]
    upkeep.stop()


def stale(info: dict[str, object], upkeep: Upkeep) -> bool:
    """Whether the connection whose pool ``info`` this is should reload the planner's statistics
    (``ANALYZE sqlite_schema``) because the thread made newer ones; marks them loaded."""
    if info.get("sqlite_stats_generation", 0) == upkeep.generation:
        return False
    info["sqlite_stats_generation"] = upkeep.generation
    return True

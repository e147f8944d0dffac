"""Retention of data every service shares: audit rows older than ``CLIENTFLOW_AUDIT_RETENTION_DAYS``
are deleted by a scheduled job (docs/design.md, "Retention of data").

The audit trail is append-only: a trigger refuses UPDATE, and DELETE of any row no recorded
purge covers. A purge is the only deletion there is, and it leaves its own trace: each chunk
first records itself in ``audit_purges`` (when, the cutoff, how many rows), and the trigger lets
a row go only when a purge's cutoff is later than the row (``shared/data_retention_migration.py``).
So a bug, or a person with the service's credentials going through the application, cannot
quietly remove a recent row, and every removal is accounted for.

Rows go in bounded chunks, one short transaction each (the audit writer and requests wait for
one chunk at most), oldest first.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from shared.access.authn import wall_now
from shared.db import AuditRow, PlumbingBase, UTCDateTime
from shared.metrics import PlumbingMetrics
from shared.pauses import Pauses

log = logging.getLogger(__name__)

AUDIT_ROWS = "audit_rows"
# Rows per transaction: about 10 ms of deleting on SQLite here, so a request or the audit
# writer waits that long at most behind a chunk.
CHUNK = 1000


class AuditPurgeRow(PlumbingBase):
    """One chunk of audit rows deleted because their retention ended: when, every row before
    ``cutoff`` may go, and how many went (``deleted``). The audit trail's trigger lets a row be
    deleted only when a row here covers it."""

    __tablename__ = "audit_purges"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    deleted: Mapped[int] = mapped_column()


async def purge_audit(
    sessions: async_sessionmaker,
    *,
    retention_days: int,
    metrics: PlumbingMetrics | None = None,
    chunk: int = CHUNK,
    now: datetime | None = None,
) -> int:
    """Delete the audit rows older than ``retention_days``, ``chunk`` at a time, oldest first;
    returns how many went. Each chunk commits alone and is counted after its commit.

    Age is measured on the clock the rows are stamped with: the real one (the audit trail is
    access, and access is security, not business: ``shared.access.authn.wall_now``), so a
    simulated year neither ages the trail nor empties it. With ``CLIENTFLOW_CLOCK=system`` (any
    real deployment) that is the business clock too. ``now`` is for tests."""
    now = now or wall_now()
    before = now - timedelta(days=retention_days)
    total = 0
    pause = Pauses()
    while True:
        async with sessions() as session, session.begin():
            oldest = select(AuditRow.id).where(AuditRow.at < before).order_by(AuditRow.id).limit(chunk).subquery()
            count, last = (await session.execute(select(func.count(), func.max(oldest.c.id)))).one()
            if not count:
                break
            # The permit first: the trigger checks it for every row the delete touches.
            session.add(AuditPurgeRow(at=now, cutoff=before, deleted=count))
            await session.flush()
            # The first ``count`` rows before the cutoff are exactly those up to ``last``.
            await session.execute(
                delete(AuditRow)
                .where(AuditRow.id <= last, AuditRow.at < before)
                .execution_options(synchronize_session=False)
            )
        total += count
        if metrics is not None:
            metrics.data_retention_purged.labels(metrics.service, AUDIT_ROWS).inc(count)
        if count < chunk:
            break
        await pause()
    if total:
        log.info("data retention: %d audit rows recorded before %s deleted", total, before.isoformat())
    return total

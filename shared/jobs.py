"""Poison isolation for scheduled jobs: one record that fails never stops the others.

A job (nurture's sender, billing's cycle and dunning, retention's reviews, loyalty and price
changes) does one step per record. ``RecordJob.run`` tries a chunk of records in one
transaction, so the happy path costs what it did before; when a chunk fails it is rolled back
and each of its records is tried alone (as ``shared.consumer`` falls back to one by one), so
the record at fault is found and the others commit. A record that fails:

- is kept in ``job_failures`` with its reason and the number of attempts;
- is counted (``clientflow_job_failures_total{service,job}``: the ``ScheduledJobFailing`` alert);
- waits out an exponential backoff on the business clock, then is tried again, alone;
- is given up after ``Backoff.max_attempts`` (``clientflow_job_records_given_up``: the
  ``ScheduledJobGaveUp`` alert) until someone fixes it and deletes its row.

Its row goes as soon as it succeeds. Infrastructure errors (the database away, a lock timeout,
a connection refused) are no record's fault: they end the pass, which runs again at the next
tick, and count against no record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import JobFailureRow
from shared.metrics import PlumbingMetrics
from shared.pauses import Pauses
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

REASON_MAX = 2000
KEY_MAX = 200


def infrastructure(exc: BaseException) -> bool:
    """The database (or a provider) away or busy: nobody's record is at fault. Unlike the
    consumer's ``TRANSIENT``, a bare ``OSError`` is not here: ``ZoneInfo("America")`` raises
    ``IsADirectoryError``, and that is one record's odd value, not an outage."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout, ConnectionError, TimeoutError))


def describe(error: BaseException | str) -> str:
    """A reason fit to store: bounded, and without what PostgreSQL's text refuses (NUL, lone
    surrogates), since an odd value often ends up in its own error message."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = text[: REASON_MAX * 2].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:REASON_MAX]


@dataclass(frozen=True)
class Backoff:
    """How a failed record is tried again: after ``base``, then twice as long each time up to
    ``ceiling``; given up after ``max_attempts`` failed attempts (5 by default: about 75
    minutes of business time from the first failure to the last)."""

    max_attempts: int = 5
    base: timedelta = timedelta(minutes=5)
    ceiling: timedelta = timedelta(hours=6)

    def next_attempt(self, now: datetime, attempts: int) -> datetime | None:
        """When to try again after the ``attempts``-th failure; None to give up."""
        if attempts >= self.max_attempts:
            return None
        return now + min(self.base * 2 ** max(attempts - 1, 0), self.ceiling)


@dataclass(frozen=True)
class Failure:
    """One record's failure as ``job_failures`` keeps it (``next_attempt_at`` None: given up)."""

    key: str
    reason: str
    attempts: int
    next_attempt_at: datetime | None

    @property
    def given_up(self) -> bool:
        return self.next_attempt_at is None

    def waits(self, now: datetime) -> bool:
        """Not to be tried now: given up, or still in its backoff."""
        return self.next_attempt_at is None or self.next_attempt_at > now


@dataclass
class Pass(Generic[K, R]):
    """What one run did: the records done (with what their step returned), the records that
    failed this time, and those not tried (waiting out a backoff, or given up)."""

    done: dict[K, R] = field(default_factory=dict)
    failed: dict[K, Failure] = field(default_factory=dict)
    waiting: list[K] = field(default_factory=list)


class RecordJob:
    """One scheduled job's per-record steps, isolated (see the module's docstring)."""

    def __init__(self, name: str, *, metrics: PlumbingMetrics | None = None, backoff: Backoff = Backoff()) -> None:
        self.name = name
        self.metrics = metrics
        self.backoff = backoff
        self._given_up = 0
        if metrics is not None:  # exposed at 0 from the start, so rules find the series
            metrics.job_failures.labels(metrics.service, name)
            metrics.job_given_up.labels(metrics.service, name).set(0)

    async def failures(self, session: AsyncSession) -> dict[str, Failure]:
        """This job's failed records by key (usually none): one query, in the caller's transaction."""
        rows = await session.scalars(select(JobFailureRow).where(JobFailureRow.job == self.name))
        known = {r.key: Failure(r.key, r.reason, r.attempts, None if r.given_up else r.next_attempt_at) for r in rows}
        self._set_given_up(sum(f.given_up for f in known.values()))
        return known

    async def run(
        self,
        uow: UnitOfWorkFactory,
        keys: Iterable[K],
        step: Callable[[UnitOfWork, Any], Awaitable[R]],
        *,
        now: datetime,
        load: Callable[[UnitOfWork, list[K]], Awaitable[Mapping[K, Any]]] | None = None,
        chunk: int = 100,
        together: bool = True,
    ) -> Pass[K, R]:
        """Apply ``step(tx, record)`` to each of ``keys``, ``chunk`` records a transaction, each
        alone when its chunk fails. ``together=False`` gives every record its own transaction
        from the start: for a step with an effect outside the database (a card charge), which
        must not run twice because a neighbour failed.

        ``load(tx, keys)`` reads a transaction's records in one query (locking them if it must);
        a key it leaves out is skipped (gone, or held by someone else). Without it the step is
        given the key. A record that failed before is tried alone, once its backoff is over."""
        async with uow.sessions() as session:
            known = await self.failures(session)
        result: Pass[K, R] = Pass()
        fresh: list[K] = []
        again: list[K] = []
        for key in dict.fromkeys(keys):
            failure = known.get(self.key(key))
            if failure is None:
                fresh.append(key)
            elif failure.waits(now):
                result.waiting.append(key)
            else:
                again.append(key)  # alone: in a chunk it would most likely fail it again
        if not together:
            again, fresh = [*fresh, *again], []
        for start in range(0, len(fresh), chunk):
            part = fresh[start : start + chunk]
            try:
                async with uow() as tx:
                    done = await self._apply(tx, part, step, load)
            except Exception as exc:
                if infrastructure(exc):
                    raise
                log.info("%s: a chunk of %d records failed (%r); trying each alone", self.name, len(part), exc)
                for key in part:
                    await self._alone(uow, key, step, load, now=now, known=known, result=result)
            else:
                result.done.update(done)
        for key in again:
            await self._alone(uow, key, step, load, now=now, known=known, result=result)
        return result

    async def _apply(
        self,
        tx: UnitOfWork,
        keys: list[K],
        step: Callable[[UnitOfWork, Any], Awaitable[R]],
        load: Callable[[UnitOfWork, list[K]], Awaitable[Mapping[K, Any]]] | None,
    ) -> dict[K, R]:
        records: Mapping[K, Any] = await load(tx, keys) if load is not None else {k: k for k in keys}
        done: dict[K, R] = {}
        pause = Pauses()  # a long chunk lets the loop answer meanwhile
        for key in keys:
            if key in records:
                done[key] = await step(tx, records[key])
                await pause()
        return done

    async def _alone(
        self,
        uow: UnitOfWorkFactory,
        key: K,
        step: Callable[[UnitOfWork, Any], Awaitable[R]],
        load: Callable[[UnitOfWork, list[K]], Awaitable[Mapping[K, Any]]] | None,
        *,
        now: datetime,
        known: dict[str, Failure],
        result: Pass[K, R],
    ) -> None:
        try:
            async with uow() as tx:
                done = await self._apply(tx, [key], step, load)
                if self.key(key) in known:
                    await self.clear(tx, [key])
        except Exception as exc:
            if infrastructure(exc):
                raise
            result.failed[key] = await self.fail(uow, key, exc, now=now)
        else:
            result.done.update(done)

    async def fail(
        self,
        uow: UnitOfWorkFactory,
        key: Hashable,
        error: BaseException | str,
        *,
        now: datetime,
        also: Callable[[UnitOfWork, Failure], Awaitable[None]] | None = None,
    ) -> Failure:
        """Record that ``key`` failed, in a transaction of its own: one attempt more, the next
        one after the backoff, or given up. ``also(tx, failure)`` runs in that transaction (to
        hold the record itself, say). Counted after the commit."""
        reason = describe(error)
        for tries in (1, 2):
            try:
                async with uow() as tx:
                    failure = await self._record(tx, self.key(key), reason, now)
                    if also is not None:
                        await also(tx, failure)
                break
            except IntegrityError:
                if tries == 2:  # another instance inserted the row meanwhile: it is there now
                    raise
        log.warning(
            "scheduled job %s failed on %s (attempt %d, %s): %s",
            self.name,
            failure.key,
            failure.attempts,
            "given up" if failure.given_up else f"next at {failure.next_attempt_at:%Y-%m-%d %H:%M}",
            reason[:500],
            exc_info=error if isinstance(error, BaseException) else None,
        )
        if self.metrics is not None:
            self.metrics.job_failures.labels(self.metrics.service, self.name).inc()
        if failure.given_up:
            self._set_given_up(self._given_up + 1)
        return failure

    async def _record(self, tx: UnitOfWork, key: str, reason: str, now: datetime) -> Failure:
        row = await tx.session.get(JobFailureRow, (self.name, key), with_for_update=True)
        if row is None:
            row = JobFailureRow(job=self.name, key=key, reason=reason, attempts=0, first_failed_at=now, failed_at=now)
            tx.session.add(row)
        row.attempts += 1
        row.reason, row.failed_at = reason, now
        row.next_attempt_at = self.backoff.next_attempt(now, row.attempts)
        row.given_up = row.next_attempt_at is None
        await tx.session.flush()
        return Failure(key, reason, row.attempts, row.next_attempt_at)

    async def clear(self, tx: UnitOfWork, keys: Iterable[Hashable]) -> None:
        """Forget the failures of records that have now succeeded, in the transaction that did it."""
        names = [self.key(k) for k in keys]
        for start in range(0, len(names), 500):
            await tx.session.execute(
                delete(JobFailureRow).where(
                    JobFailureRow.job == self.name, JobFailureRow.key.in_(names[start : start + 500])
                )
            )

    @staticmethod
    def key(key: Hashable) -> str:
        return str(key)[:KEY_MAX]

    def _set_given_up(self, count: int) -> None:
        self._given_up = count
        if self.metrics is not None:
            self.metrics.job_given_up.labels(self.metrics.service, self.name).set(count)


class Jobs:
    """A service's record jobs, made once in its composition root and handed to the use cases
    (they share the service's metrics and backoff). ``jobs("billing.dunning")`` is that job."""

    def __init__(self, metrics: PlumbingMetrics | None = None, *, backoff: Backoff = Backoff()) -> None:
        self.metrics = metrics
        self.backoff = backoff
        self._jobs: dict[str, RecordJob] = {}

    def __call__(self, name: str) -> RecordJob:
        job = self._jobs.get(name)
        if job is None:
            job = self._jobs[name] = RecordJob(name, metrics=self.metrics, backoff=self.backoff)
        return job

"""The client record the use cases share: what a transaction has read (the batch cache and its
prefetch), the client row, its money rows and its timeline.

A batch applies many events to few clients. A client's rows are read once per transaction
(for a whole batch by ``prefetch``, else on first use) and kept in ``tx.memo``, which lives
exactly as long as the transaction: nothing another transaction changed is served from it.
Reading them again per event would cost a query each, and every query first flushes what is
pending (one UPDATE per change instead of one statement per table at the commit). Whatever
this module adds to those rows goes into the memo as well, so it stays the whole truth.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, event, insert, select
from sqlalchemy.orm import ORMExecuteState, Session

from services.retention import domain
from services.retention.context import Context
from services.retention.domain import TimelineEntry
from services.retention.store import Client, ClientEvent, ClientMoney, LoyaltyAward
from shared.errors import NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork, UnitOfWorkFactory

CHUNK = 500  # ids per IN (...) list
_TIMELINE = cast(Table, ClientEvent.__table__)
_MONEY = cast(Table, ClientMoney.__table__)
_AWARDS = cast(Table, LoyaltyAward.__table__)


@dataclass
class _Assessed:
    """A client's timeline events of ``ASSESSED_TYPES`` from ``since`` on (every one when None)."""

    since: datetime | None
    events: list[TimelineEntry]


def _clients(tx: UnitOfWork) -> dict[uuid.UUID, Client | None]:
    """Client rows this transaction holds locked (read FOR UPDATE, or created here); None: none
    existed (a missing row cannot be locked: creating it races on the primary key instead)."""
    return tx.memo.setdefault("retention.clients", {})


def _money(tx: UnitOfWork) -> dict[uuid.UUID, dict[tuple[str, str], ClientMoney | _NewMoney]]:
    """Every money row of a client, by (measure, currency): loaded, or created here."""
    return tx.memo.setdefault("retention.money", {})


def _payments(tx: UnitOfWork) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The details of every ``payment.succeeded`` on a client's timeline."""
    return tx.memo.setdefault("retention.payments", {})


def _assessed(tx: UnitOfWork) -> dict[uuid.UUID, _Assessed]:
    return tx.memo.setdefault("retention.assessed", {})


def _awards(tx: UnitOfWork) -> dict[uuid.UUID, Award | None]:
    return tx.memo.setdefault("retention.awards", {})


def _chunks(ids: list[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _lookback_start(ctx: Context, now: datetime) -> datetime:
    """From when the health and churn-risk rules read the timeline."""
    return now - domain.lookback(ctx.settings.health, ctx.settings.risk)


async def prefetch(
    tx: UnitOfWork,
    ctx: Context,
    *,
    lead_ids: Iterable[uuid.UUID],
    paying: Iterable[uuid.UUID],
    invoice_ids: Iterable[uuid.UUID],
) -> None:
    """Read what a batch's events will, a few queries for the whole batch: the clients (locked,
    in key order, as two instances' batches then lock in the same order), their money rows,
    the timeline the rules count (clients only), the payments of those ``paying`` an invoice
    off, and the loyalty awards of ``invoice_ids``."""
    clients = _clients(tx)
    fresh = sorted(set(lead_ids) - clients.keys())
    for chunk in _chunks(fresh):
        query = select(Client).where(Client.lead_id.in_(chunk)).order_by(Client.lead_id).with_for_update()
        found = {c.lead_id: c for c in await tx.session.scalars(query)}
        for lead_id in chunk:
            clients[lead_id] = found.get(lead_id)
    # A lead without a client row has no other row either (they all refer to it): ``client``
    # starts its memo empty when it creates the row.
    existing = {i: c for i in fresh if (c := clients[i]) is not None}
    money = _money(tx)
    for lead_id in existing:
        money[lead_id] = {}
    for chunk in _chunks(list(existing)):
        for row in await tx.session.scalars(select(ClientMoney).where(ClientMoney.lead_id.in_(chunk))):
            money[row.lead_id][(row.measure, row.currency)] = row
    payers = sorted(set(paying) & existing.keys())
    payments = _payments(tx)
    for lead_id in payers:
        payments[lead_id] = []
    for chunk in _chunks(payers):
        # By client only, the type checked here: with the type in the query SQLite's planner
        # took the type index, a quarter of the timeline, over the client's few rows (27 ms a
        # batch with 100,000 timeline rows, against 1.4 ms by the client index).
        rows = await tx.session.execute(
            select(ClientEvent.lead_id, ClientEvent.type, ClientEvent.detail).where(ClientEvent.lead_id.in_(chunk))
        )
        for lead_id, kind, detail in rows:
            if kind == "payment.succeeded":
                payments[lead_id].append(detail)
    since = _lookback_start(ctx, tx.now())
    scored = [i for i, c in existing.items() if c.became_client_at is not None]
    assessed = _assessed(tx)
    for lead_id in scored:
        assessed[lead_id] = _Assessed(since, [])
    for chunk in _chunks(scored):
        rows = await tx.session.execute(
            select(ClientEvent.lead_id, ClientEvent.type, ClientEvent.at, ClientEvent.detail).where(
                ClientEvent.lead_id.in_(chunk), ClientEvent.type.in_(domain.ASSESSED_TYPES), ClientEvent.at >= since
            )
        )
        for lead_id, event_type, at, detail in rows:
            assessed[lead_id].events.append((event_type, at, detail))
    awards = _awards(tx)
    wanted = sorted(set(invoice_ids) - awards.keys())
    for chunk in _chunks(wanted):
        found_awards = {
            a.invoice_id: a
            for a in await tx.session.scalars(select(LoyaltyAward).where(LoyaltyAward.invoice_id.in_(chunk)))
        }
        for invoice_id in chunk:
            awards[invoice_id] = found_awards.get(invoice_id)


# --------------------------------------------------------------------------- reading through the cache


async def locked_client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client | None:
    """The client row, locked for this transaction (read FOR UPDATE once), or None."""
    clients = _clients(tx)
    if lead_id not in clients:
        clients[lead_id] = await tx.session.get(Client, lead_id, with_for_update=True)
    return clients[lead_id]


def remember(tx: UnitOfWork, clients: dict[uuid.UUID, Client]) -> None:
    """Client rows a scheduled pass locked itself: this transaction holds them."""
    _clients(tx).update(clients)


async def _money_rows(tx: UnitOfWork, lead_id: uuid.UUID) -> dict[tuple[str, str], ClientMoney | _NewMoney]:
    money = _money(tx)
    if lead_id not in money:
        rows = await tx.session.scalars(select(ClientMoney).where(ClientMoney.lead_id == lead_id))
        money[lead_id] = {(row.measure, row.currency): row for row in rows}
    return money[lead_id]


async def payment_details(tx: UnitOfWork, lead_id: uuid.UUID) -> list[dict[str, Any]]:
    """The details of every ``payment.succeeded`` on the client's timeline."""
    payments = _payments(tx)
    if lead_id not in payments:
        payments[lead_id] = list(
            await tx.session.scalars(
                select(ClientEvent.detail).where(
                    ClientEvent.lead_id == lead_id, ClientEvent.type == "payment.succeeded"
                )
            )
        )
    return payments[lead_id]


async def assessed_events(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, now: datetime) -> list[TimelineEntry]:
    """The client's events the rules count as of ``now`` (read again only if the memo does not
    reach back far enough: the clock went back)."""
    since = _lookback_start(ctx, now)
    assessed = _assessed(tx)
    known = assessed.get(lead_id)
    if known is None or (known.since is not None and known.since > since):
        rows = await tx.session.execute(
            select(ClientEvent.type, ClientEvent.at, ClientEvent.detail).where(
                ClientEvent.lead_id == lead_id, ClientEvent.type.in_(domain.ASSESSED_TYPES), ClientEvent.at >= since
            )
        )
        known = assessed[lead_id] = _Assessed(since, [(t, at, detail) for t, at, detail in rows])
    return known.events


async def award(tx: UnitOfWork, invoice_id: uuid.UUID) -> Award | None:
    """The loyalty award of an invoice, if it earned one."""
    awards = _awards(tx)
    found = awards[invoice_id] if invoice_id in awards else await tx.session.get(LoyaltyAward, invoice_id)
    if isinstance(found, NewAward) and found.written:
        # Written by a statement since: changed from now on as a loaded row.
        found = await tx.session.get(LoyaltyAward, invoice_id)
    awards[invoice_id] = found
    return found


def add_award(
    tx: UnitOfWork, *, invoice_id: uuid.UUID, lead_id: uuid.UUID, amount: Decimal, currency: str, due_at: datetime
) -> None:
    """A new loyalty award, pending until ``due_at``, remembered for the transaction."""
    new = NewAward(invoice_id, lead_id, amount, currency, due_at)
    _pending(tx).awards.append(new)
    _awards(tx)[invoice_id] = new


# --------------------------------------------------------------------------- the client record


async def client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    """The client row, locked for this transaction; created on the first event about the
    person, whatever its topic (two instances racing to create it make one batch fail on the
    primary key; the consumer retries it and the retry finds the row)."""
    found = await locked_client(tx, lead_id)
    if found is not None:
        return found
    now = tx.now()
    row = Client(
        lead_id=lead_id,
        health_factors={},
        subscription_status="none",
        mrr=Decimal(0),
        deals_won=0,
        invoices_issued=0,
        payments_on_time=0,
        payments_late=0,
        days_late_total=0,
        payments_failed=0,
        change_requests=0,
        out_of_scope_requests=0,
        feedback_count=0,
        complaints=0,
        red_flags=0,
        engagement_seen=False,
        takeover_active=False,
        takeovers=0,
        overdue_invoices=[],
        churn_risk_open=False,
        churn_risk_reasons=[],
        tier_reasons=[],
        loyalty_points=0,
        referrals_made=0,
        referrals_converted=0,
        created_at=now,
        updated_at=now,
    )
    # Inserted at the next flush, before the rows that refer to it: the unit of work writes
    # unrelated mappers in name order, Client before HealthPoint, MrrMovement, Subscription...;
    # a Cancellation (before it) is only added after a query, which flushed the client; the
    # timeline, money and award rows (``_Pending``) are written after a flush.
    tx.session.add(row)
    _clients(tx)[lead_id] = row
    _money(tx)[lead_id] = {}
    _payments(tx)[lead_id] = []
    _assessed(tx)[lead_id] = _Assessed(None, [])
    return row


def timeline(tx: UnitOfWork, client: Client, event_type: str, *, at: datetime | None = None, **detail: object) -> None:
    """Keep the event behind a change on the client's timeline (ids and counts, no personal data)."""
    cause = tx.cause
    when_at = at or (cause.occurred_at if cause else tx.now())
    details = {k: (str(v) if isinstance(v, (Decimal, uuid.UUID, datetime)) else v) for k, v in detail.items()}
    _pending(tx).timeline.append(
        {
            "lead_id": client.lead_id,
            "event_id": cause.event_id if cause else time_ordered_id(),
            "type": event_type,
            "at": when_at,
            "detail": details,
        }
    )
    payments = _payments(tx).get(client.lead_id)
    if event_type == "payment.succeeded" and payments is not None:
        payments.append(details)
    assessed = _assessed(tx).get(client.lead_id)
    if event_type in domain.ASSESSED_TYPES and assessed is not None:
        assessed.events.append((event_type, when_at, details))


async def add_money(tx: UnitOfWork, lead_id: uuid.UUID, *, measure: str, amount: Decimal, currency: str) -> None:
    """Add to the client's running total of ``measure`` (revenue, won, invoiced) in ``currency``."""
    rows = await _money_rows(tx, lead_id)
    key = (measure, currency)
    row = rows.get(key)
    if row is None:
        new = _NewMoney(lead_id, measure, currency, amount)
        rows[key] = new
        _pending(tx).money.append(new)
    elif isinstance(row, ClientMoney):
        row.amount = row.amount + amount
    elif not row.written:
        row.amount += amount
    else:
        # Written by a statement in between (a rare order of events): changed as a loaded row.
        loaded = await tx.session.get(ClientMoney, (lead_id, measure, currency))
        assert loaded is not None
        rows[key] = loaded
        loaded.amount = loaded.amount + amount


@dataclass
class _NewMoney:
    """A money row this transaction creates (``_Pending``)."""

    lead_id: uuid.UUID
    measure: str
    currency: str
    amount: Decimal
    written: bool = False


@dataclass
class NewAward:
    """A loyalty award this transaction creates (``_Pending``); read and changed like a
    ``LoyaltyAward`` until it is written."""

    invoice_id: uuid.UUID
    lead_id: uuid.UUID
    amount: Decimal
    currency: str
    due_at: datetime
    status: str = "pending"
    points: int = 0
    awarded_at: datetime | None = None
    written: bool = False


Award = LoyaltyAward | NewAward


@dataclass
class _Pending:
    """Rows this transaction created that nothing changes through the ORM, written in one
    executemany per table where the ORM would have flushed them: before the transaction's (or
    its savepoint's) commit, and before any statement the session runs, which may read them.

    As ORM objects a timeline row cost an INSERT of its own (SQLite cannot hand back the ids of
    a multi-row INSERT in order, so the ORM inserts rows with a database-made key one by one):
    three quarters of the statements of the benchmark's batch; and an ORM object per row (a
    timeline entry, a money total, a loyalty award) was a good part of the batch's time in the
    unit of work. Nothing reads a timeline row's id; a new money total or award is changed in
    memory until it is written, then as a loaded row."""

    timeline: list[dict[str, Any]] = field(default_factory=list)
    money: list[_NewMoney] = field(default_factory=list)
    awards: list[NewAward] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.timeline or self.money or self.awards)

    def take(self) -> list[tuple[Table, list[dict[str, Any]]]]:
        """The rows to write, by table; from now on the money rows and awards are changed in
        the database (``add_money``, ``award``)."""
        timeline, self.timeline = self.timeline, []
        money, self.money = self.money, []
        awards, self.awards = self.awards, []
        for row in money:
            row.written = True
        for award in awards:
            award.written = True
        money_rows = [
            {"lead_id": r.lead_id, "measure": r.measure, "currency": r.currency, "amount": r.amount} for r in money
        ]
        award_rows = [
            {
                "invoice_id": a.invoice_id,
                "lead_id": a.lead_id,
                "amount": a.amount,
                "currency": a.currency,
                "due_at": a.due_at,
                "status": a.status,
                "points": a.points,
                "awarded_at": a.awarded_at,
            }
            for a in awards
        ]
        return [
            (table, rows)
            for table, rows in ((_MONEY, money_rows), (_TIMELINE, timeline), (_AWARDS, award_rows))
            if rows
        ]


def _pending(tx: UnitOfWork) -> _Pending:
    pending: _Pending | None = tx.memo.get("retention.pending")
    if pending is not None:
        return pending
    pending = tx.memo["retention.pending"] = _Pending()
    session = tx.session.sync_session
    # The transaction the rows belong to: a savepoint of an HTTP request's transaction that
    # rolled back takes its rows with it, and the request's commit must not write them.
    owner = session.get_nested_transaction() or session.get_transaction()

    def write(_: ORMExecuteState | Session) -> None:
        if not pending:
            return
        if (session.get_nested_transaction() or session.get_transaction()) is not owner:
            return
        # Taken before the INSERTs, which run this hook again; each first flushes the ORM's
        # pending rows, so the clients they refer to are written before them.
        for table, rows in pending.take():
            session.execute(insert(table), rows)

    event.listen(session, "do_orm_execute", write)
    event.listen(session, "before_commit", write)
    return pending


def when(tx: UnitOfWork) -> datetime:
    """When the event being applied happened (business clock); a command's own time otherwise."""
    return tx.cause.occurred_at if tx.cause is not None else tx.now()


def email_hash(email: str | None) -> str | None:
    """One-way hash of a normalised e-mail address (no address is kept in retention)."""
    if not email or not email.strip():
        return None
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


# --------------------------------------------------------------------------- reading clients


async def get_client(tx: UnitOfWork, lead_id: uuid.UUID) -> Client:
    """The client row (not locked), or ``NotFound``."""
    found = await tx.session.get(Client, lead_id)
    if found is None:
        raise NotFound(f"no client {lead_id}")
    return found


async def revenue_of(tx: UnitOfWork, lead_id: uuid.UUID) -> dict[str, Decimal]:
    """Payments received from the client, by currency (refunds taken off)."""
    rows = await tx.session.execute(
        select(ClientMoney.currency, ClientMoney.amount).where(
            ClientMoney.lead_id == lead_id, ClientMoney.measure == "revenue"
        )
    )
    return domain.add_money({}, rows.all())


# Client ids a scheduled pass holds at a time: with 100,000 clients, every id and the job's
# bookkeeping of each (``shared.jobs.Pass``) was 30 MB above the service's resting size.
ID_WINDOW = 5000


async def client_id_windows(uow: UnitOfWorkFactory) -> AsyncIterator[list[uuid.UUID]]:
    """Every client's id (prospects have no health or tier) in key order, ``ID_WINDOW`` at a
    time, each window read in a transaction of its own after the last id of the one before."""
    after: uuid.UUID | None = None
    while True:
        query = (
            select(Client.lead_id).where(Client.became_client_at.is_not(None)).order_by(Client.lead_id).limit(ID_WINDOW)
        )
        if after is not None:
            query = query.where(Client.lead_id > after)
        async with uow() as tx:
            window = list(await tx.session.scalars(query))
        if window:
            yield window
        if len(window) < ID_WINDOW:
            return
        after = window[-1]


async def lock_clients(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Client]:
    """A page of clients, locked in key order and remembered for the transaction. A row a
    consumer holds is skipped: that consumer re-scores it anyway."""
    query = (
        select(Client)
        .where(Client.lead_id.in_(ids), Client.became_client_at.is_not(None))
        .order_by(Client.lead_id)
        .with_for_update(skip_locked=True)
    )
    found = {c.lead_id: c for c in await tx.session.scalars(query)}
    remember(tx, found)
    return found

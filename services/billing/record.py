"""The rows billing's use cases share within a transaction: loaded once, locked, remembered.

A batch of events would otherwise read the same client's account (and its absent credit
balance, and a deal won earlier in the batch) once per event, each read a SELECT and an
autoflush. ``prefetch`` reads what a batch will look up in a few queries; ``account``,
``known_deal`` and ``credit_balance`` answer from what this transaction has read or created.
Rows a won deal creates are written in bulk (``insert_later``, below).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import Table, event, insert, select
from sqlalchemy.orm import (
    InstrumentedAttribute,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    make_transient_to_detached,
)

from services.billing import store
from services.billing.store import Account, CreditBalance, Deal, Invoice, InvoiceLine, Subscription
from shared.events import Envelope
from shared.uow import UnitOfWork

# The rows a transaction remembers by key (see ``known``).
_Row = TypeVar("_Row", Account, Deal)

# Keys per IN (...) query: well under every database's limit on bound parameters.
_CHUNK = 500


def known(tx: UnitOfWork, model: type[_Row]) -> dict[uuid.UUID, _Row | None]:
    """The accounts or deals this transaction has read, prefetched or created, by key, and the
    keys known to have none (None). A row created earlier in the transaction is pending, not in
    the identity map, so ``session.get`` would SELECT it (flushing everything first); only
    ``account`` and ``deposits.open_deposit_invoice`` create these rows, and they record them
    here (or, written as rows, in ``_made`` and ``won_here``)."""
    return tx.memo.setdefault(f"billing.known.{model.__tablename__}", {})


async def get_known(tx: UnitOfWork, model: type[_Row], key: uuid.UUID) -> _Row | None:
    """The row of ``model`` with ``key`` (None when there is none), read at most once per transaction."""
    rows = known(tx, model)
    if key not in rows:
        made = _made(tx).pop((model, key), None)
        rows[key] = await tx.session.get(model, key) if made is None else _as_object(tx, model, key, made)
    return rows[key]


async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
    """Read the accounts and won deals a batch's events will look up in one query per 500 keys,
    so each handler finds them in memory, or knows them absent, instead of one SELECT (and
    autoflush) per event."""
    await _load(tx, Account, Account.lead_id, {e.lead_id for e in events if e.lead_id is not None})
    deal_ids = {_uuid(e.data.get("deal_id")) for e in events if e.type == "deal.won"}
    await _load(tx, Deal, Deal.deal_id, {d for d in deal_ids if d is not None})


async def _load(
    tx: UnitOfWork, model: type[_Row], column: InstrumentedAttribute[uuid.UUID], keys: set[uuid.UUID]
) -> None:
    rows = known(tx, model)
    wanted = [key for key in keys if key not in rows]
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found = {
            getattr(row, column.key): row for row in await tx.session.scalars(select(model).where(column.in_(chunk)))
        }
        rows.update({key: found.get(key) for key in chunk})


def _uuid(value: object) -> uuid.UUID | None:
    """An id from an event's raw data; None for one the handler will refuse anyway."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def account(tx: UnitOfWork, lead_id: uuid.UUID) -> Account:
    """The client's account, created (and remembered) the first time billing hears of them."""
    row = await get_known(tx, Account, lead_id)
    if row is None:
        now = tx.now()
        row = Account(lead_id=lead_id, contact_name=None, created_at=now, updated_at=now)
        tx.session.add(row)
        known(tx, Account)[lead_id] = row
    return row


def remember_deal(tx: UnitOfWork, deal: Deal) -> None:
    """A deal created in this transaction: later events of the batch find it without a SELECT."""
    known(tx, Deal)[deal.deal_id] = deal


def won_here(tx: UnitOfWork) -> set[uuid.UUID]:
    """Deals this transaction wrote as rows (``won_later``): the same deal won again in the
    batch is known by its id alone, with no Deal object made for it."""
    return tx.memo.setdefault("billing.won_here", set())


# --------------------------------------------------------------------------- rows in bulk
#
# A won deal made five ORM objects (account, subscription, invoice, its line, the deal) only to
# insert them: their constructors, attribute events and the flush's bookkeeping were most of
# billing's consumer time (25,500 objects for 3,000 events). Those rows are kept as plain dicts
# and written with one multi-row INSERT per table just before the session next speaks to the
# database (any statement, a flush, the commit): whatever reads or changes them later in the
# transaction finds them there, as it found the autoflushed objects.

# The order the tables are written in: a line and a deal name their invoice.
_BULK_ORDER: tuple[Table, ...] = tuple(
    cast(Table, model.__table__) for model in (Account, Subscription, Invoice, InvoiceLine, Deal)
)
_WAITING = "billing.rows_waiting"


async def insert_later(tx: UnitOfWork, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` of ``model`` before the next statement of this transaction (see above).
    Inside a savepoint (an HTTP request's unit of work) they are inserted now: a savepoint that
    rolls back must take them with it."""
    table = cast(Table, model.__table__)
    if tx.session.in_nested_transaction():
        await tx.session.execute(insert(table), rows)
        return
    if model is InvoiceLine and any(isinstance(obj, InvoiceLine) for obj in tx.session.new):
        # Lines get their ids in the order they are written: lines of an invoice issued as an
        # object earlier in the transaction go first, as they would applying events one by one.
        await tx.session.flush()
    _waiting(tx.session.sync_session)[table].extend(rows)


async def insert_account_later(tx: UnitOfWork, row: dict[str, Any]) -> None:
    """``insert_later`` for a new account, which ``get_known`` (and so ``account``) then finds
    without a SELECT, nor writing what waits to be written as a SELECT would: as an object
    made from the row, pending while the row waits, persistent once it is written. (An account
    changes only through that object, never by an UPDATE statement, so the row as written is
    the row in the database.)"""
    key = row["lead_id"]
    known(tx, Account).pop(key, None)
    _made(tx)[Account, key] = row
    await insert_later(tx, Account, [row])


async def won_later(tx: UnitOfWork, row: dict[str, Any]) -> None:
    """``insert_later`` for a won deal: the same deal won again in this transaction is known by
    its id (``won_here``); anything else asking for it reads it, written by then."""
    known(tx, Deal).pop(row["deal_id"], None)
    won_here(tx).add(row["deal_id"])
    await insert_later(tx, Deal, [row])


def _made(tx: UnitOfWork) -> dict[tuple[type[Any], uuid.UUID], dict[str, Any]]:
    """The rows ``insert_account_later`` made in this transaction, by model and key."""
    return tx.memo.setdefault("billing.rows_made", {})


def _as_object(tx: UnitOfWork, model: type[_Row], key: uuid.UUID, row: dict[str, Any]) -> _Row:
    """The row ``insert_account_later`` made, as an object of the session: pending (taken out of
    the rows waiting) if it was not written yet, persistent as written if it was."""
    session = tx.session.sync_session
    waiting = session.info.get(_WAITING, {}).get(model.__table__, [])
    at = next((i for i, r in enumerate(waiting) if r is row), None)
    if at is not None:
        del waiting[at]
        obj = model(**row)
    else:
        # Written already: the object some query of the transaction loaded it as, else one
        # made persistent as written (no INSERT again; a change becomes an UPDATE).
        loaded = session.identity_map.get(session.identity_key(model, key))
        if loaded is not None:
            return cast(_Row, loaded)
        obj = model(**row)
        make_transient_to_detached(obj)
    tx.session.add(obj)
    return obj


def _waiting(session: Session) -> dict[Table, list[dict[str, Any]]]:
    """The rows waiting to be written in ``session``'s transaction, by table (the session's own
    events write them: it is one transaction's, a consumer batch's)."""
    waiting: dict[Table, list[dict[str, Any]]] | None = session.info.get(_WAITING)
    if waiting is None:
        waiting = session.info[_WAITING] = {table: [] for table in _BULK_ORDER}
        event.listen(session, "do_orm_execute", _before_statement)
        event.listen(session, "before_flush", _before_flush)
        event.listen(session, "before_commit", _write)
        event.listen(session, "after_transaction_create", _before_savepoint)
        event.listen(session, "after_transaction_end", _after_transaction)
    return waiting


def _write(session: Session, transaction: SessionTransaction | None = None) -> None:
    waiting: dict[Table, list[dict[str, Any]]] | None = session.info.get(_WAITING)
    if not waiting or not any(waiting.values()):
        return
    connection = transaction.connection(None) if transaction is not None else session.connection()
    for table, rows in waiting.items():
        if rows:
            batch = rows[:]
            rows.clear()  # before the INSERT: a failing one is not tried again at the rollback
            connection.execute(insert(table), batch)


def _before_statement(state: ORMExecuteState) -> None:
    _write(state.session)


def _before_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    _write(session)


def _before_savepoint(session: Session, transaction: SessionTransaction) -> None:
    # Written through the enclosing transaction, before the SAVEPOINT: they are its rows.
    if transaction.nested and transaction.parent is not None:
        _write(session, transaction.parent)


def _after_transaction(session: Session, transaction: SessionTransaction) -> None:
    # Committed: written already (before_commit). Rolled back: gone with the transaction.
    if transaction.parent is None:
        for rows in session.info.get(_WAITING, {}).values():
            rows.clear()


# --------------------------------------------------------------------------- credit balances


def _balances(tx: UnitOfWork) -> dict[tuple[uuid.UUID, str], CreditBalance | None]:
    """The credit balance rows this transaction has read, by client and currency, and the ones
    known not to exist: most clients have none, and one payment looks for it up to three times."""
    return tx.memo.setdefault("billing.known.credit_balances", {})


async def credit_balance(tx: UnitOfWork, *, lead_id: uuid.UUID, currency: str) -> CreditBalance | None:
    """The client's credit row in ``currency``, if any, read at most once per transaction."""
    rows = _balances(tx)
    if (lead_id, currency) not in rows:
        rows[lead_id, currency] = await tx.session.get(CreditBalance, (lead_id, currency))
    return rows[lead_id, currency]


async def locked_credit_balance(tx: UnitOfWork, *, lead_id: uuid.UUID, currency: str) -> CreditBalance:
    """The client's credit row in ``currency``, locked for this transaction (created at 0 if absent)."""
    row = await store.locked_credit_balance(tx.session, lead_id=lead_id, currency=currency, now=tx.now())
    _balances(tx)[lead_id, currency] = row  # created now if it was not there
    return row


async def credit(tx: UnitOfWork, *, lead_id: uuid.UUID, currency: str, amount: Decimal) -> Decimal:
    """Add ``amount`` to the client's credit in ``currency``; returns the balance."""
    if amount <= 0:
        row = await credit_balance(tx, lead_id=lead_id, currency=currency)
        return row.balance if row else Decimal("0.00")
    now = tx.now()
    row = await locked_credit_balance(tx, lead_id=lead_id, currency=currency)
    row.balance = row.balance + amount
    row.updated_at = now
    return row.balance

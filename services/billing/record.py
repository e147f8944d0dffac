"""The rows billing's use cases share within a transaction: loaded once, locked, remembered.

A batch of events would otherwise read the same client's account (and its absent credit
balance, and a deal won earlier in the batch) once per event, each read a SELECT and an
autoflush. ``prefetch`` reads what a batch will look up in a few queries; ``account``,
``known_deal`` and ``credit_balance`` answer from what this transaction has read or created.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute

from services.billing import store
from services.billing.store import Account, CreditBalance, Deal
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
    ``account`` and ``deposits.open_deposit_invoice`` create these rows, and they record them here."""
    return tx.memo.setdefault(f"billing.known.{model.__tablename__}", {})


async def get_known(tx: UnitOfWork, model: type[_Row], key: uuid.UUID) -> _Row | None:
    """The row of ``model`` with ``key`` (None when there is none), read at most once per transaction."""
    rows = known(tx, model)
    if key not in rows:
        rows[key] = await tx.session.get(model, key)
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

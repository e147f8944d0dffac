"""Company accounts: the people of one company linked to one account (the rule:
domain/accounts.py), and the account as read with its people, their deals and stages.

A capture links its lead (a new one, or a known person who had none yet); the CSV import
captures row by row, so its leads are linked the same way; the leads captured before accounts
existed were linked by the migration that made them (``e5c1a7f3b9d2_company_accounts``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, select

from services.leads.domain.accounts import AccountKey, account_key
from services.leads.store import Account, Deal, Lead
from shared.errors import NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

_ACCOUNTS = "leads.accounts"  # tx.memo: the accounts this transaction found or made, by key


async def account_for(tx: UnitOfWork, *, email: str | None, company: str | None) -> Account | None:
    """The account of a person with this address and company name, made on its first person;
    None when they belong to none (free mail, no company)."""
    key = account_key(email, company)
    if key is None or company is None:
        return None
    known: dict[AccountKey, Account | None] = tx.memo.setdefault(_ACCOUNTS, {})
    account = known[key] if key in known else await _stored(tx, key)
    if account is None:
        # A concurrent first capture of the same company makes the commit fail on the unique
        # (domain, name_key): the capture is tried again and finds this one (api.create_lead).
        account = Account(
            id=time_ordered_id(),
            name=company.strip()[:200],
            domain=key.domain,
            name_key=key.name_key,
            created_at=tx.now(),
        )
        tx.session.add(account)
    known[key] = account
    return account


# Built once, with its cache key: building it was a share of every capture's CPU.
_BY_KEY = select(Account).where(Account.domain == bindparam("domain"), Account.name_key == bindparam("name_key"))


async def _stored(tx: UnitOfWork, key: AccountKey) -> Account | None:
    return await tx.session.scalar(_BY_KEY, {"domain": key.domain, "name_key": key.name_key})


async def prefetch(tx: UnitOfWork, people: Iterable[tuple[str | None, str | None]]) -> None:
    """Read up front, in one query per 500 domains, the accounts a chunk of captures (an import)
    belongs to, and remember which have none yet: each capture then asks nothing."""
    keys = {k for email, company in people if (k := account_key(email, company)) is not None}
    known: dict[AccountKey, Account | None] = tx.memo.setdefault(_ACCOUNTS, {})
    wanted = sorted({k.domain for k in keys if k not in known})
    for start in range(0, len(wanted), 500):
        rows = await tx.session.scalars(select(Account).where(Account.domain.in_(wanted[start : start + 500])))
        for account in rows:
            known[AccountKey(account.domain, account.name_key)] = account
    for key in keys:
        known.setdefault(key, None)


async def link(tx: UnitOfWork, lead: Lead) -> Account | None:
    """Link ``lead`` to its company's account when it has none yet; the account, if any."""
    if lead.account_id is not None:
        return await tx.session.get(Account, lead.account_id)
    account = await account_for(tx, email=lead.email, company=lead.company)
    if account is not None:
        lead.account_id = account.id
    return account


async def get_account(tx: UnitOfWork, account_id: uuid.UUID) -> Account:
    account = await tx.session.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


async def people_of(tx: UnitOfWork, account_id: uuid.UUID) -> Sequence[Lead]:
    """The account's people (erased and merged-away leads left out), in capture order."""
    rows = await tx.session.scalars(
        select(Lead)
        .where(Lead.account_id == account_id, Lead.erased_at.is_(None), Lead.merged_into.is_(None))
        .order_by(Lead.created_at, Lead.id)
    )
    return rows.all()


async def deals_of_people(tx: UnitOfWork, lead_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Deal]]:
    """Each person's deals, oldest first."""
    found: dict[uuid.UUID, list[Deal]] = {i: [] for i in lead_ids}
    if not lead_ids:
        return found
    rows = await tx.session.scalars(
        select(Deal).where(Deal.lead_id.in_(list(lead_ids))).order_by(Deal.created_at, Deal.id)
    )
    for deal in rows:
        found[deal.lead_id].append(deal)
    return found

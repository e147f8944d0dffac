"""Accounts: what billing keeps of a client besides money (tier, takeover), and forgetting the
person on request."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from services.billing import record
from services.billing.store import ChangeOrder, Deal, Payment, TimeEntry
from shared.privacy import forget_person
from shared.uow import UnitOfWork


async def set_tier(tx: UnitOfWork, lead_id: uuid.UUID | None, *, tier: str) -> None:
    """Retention reviewed the client's tier: a ``best`` client gets longer dunning steps."""
    if lead_id is None:
        return
    account = await record.account(tx, lead_id)
    account.tier = tier
    account.updated_at = tx.now()


async def set_company_account(tx: UnitOfWork, lead_id: uuid.UUID | None, *, account_id: uuid.UUID | None) -> None:
    """Leads linked the person to a company account (``lead.captured``): their invoices are
    listed with the account's (``GET /invoices?account_id=``). A capture without one changes
    nothing (and makes no row for a lead that never becomes a client)."""
    if lead_id is None or account_id is None:
        return
    account = await record.account(tx, lead_id)
    if account.account_id != account_id:
        account.account_id = account_id
        account.updated_at = tx.now()


async def set_takeover(tx: UnitOfWork, lead_id: uuid.UUID | None, *, active: bool) -> None:
    """A human handles the client: dunning reminders wait until they are done."""
    if lead_id is None:
        return
    account = await record.account(tx, lead_id)
    account.takeover_since = (account.takeover_since or tx.now()) if active else None
    account.updated_at = tx.now()


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID | None) -> None:
    """Forget the person: the billing contact's name, who signed, free-text payment
    references, time-entry notes and change-request texts (which may name people).
    Invoices, payments and balances keep their amounts, tied to an anonymous ``lead_id``."""
    if lead_id is None:
        return
    now = tx.now()
    account = await record.account(tx, lead_id)
    account.contact_name = None
    account.erased_at = account.erased_at or now
    account.updated_at = now
    await tx.session.execute(update(Deal).where(Deal.lead_id == lead_id).values(signed_by=None))
    await tx.session.execute(update(Payment).where(Payment.lead_id == lead_id).values(reference=None))
    await tx.session.execute(update(TimeEntry).where(TimeEntry.lead_id == lead_id).values(description=None))
    await tx.session.execute(update(ChangeOrder).where(ChangeOrder.lead_id == lead_id).values(description=None))
    await forget_person(tx, lead_id)

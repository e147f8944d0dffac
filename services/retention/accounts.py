"""Company accounts as retention sees them: the account a client belongs to (folded from
leads' ``lead.captured``) and the account's figures: MRR, revenue, worst and average health."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import func, select

from services.retention import record
from services.retention.store import Client, ClientMoney
from shared.errors import NotFound
from shared.uow import UnitOfWork


async def fold_account(tx: UnitOfWork, lead_id: uuid.UUID, *, account_id: uuid.UUID | None, duplicate: bool) -> None:
    """Keep the company account of the person (a capture without one changes nothing; a repeat
    touch of a person retention never saw creates nothing)."""
    if account_id is None:
        return
    client = await (record.locked_client(tx, lead_id) if duplicate else record.client(tx, lead_id))
    if client is not None and client.account_id != account_id:
        client.account_id = account_id
        client.updated_at = tx.now()


@dataclass(frozen=True)
class AccountFigures:
    """An account's clients and their figures (amounts per currency, never added across)."""

    account_id: uuid.UUID
    clients: list[Client]
    mrr: dict[str, Decimal]
    revenue: dict[str, Decimal]
    worst: Client | None
    average_health: Decimal | None


async def account_figures(tx: UnitOfWork, account_id: uuid.UUID) -> AccountFigures:
    """The account's clients (prospects left out) with MRR, revenue and the worst and average
    health; 404 when retention knows nobody of the account."""
    known = await tx.session.scalar(select(func.count()).select_from(Client).where(Client.account_id == account_id))
    if not known:
        raise NotFound(f"no client of account {account_id}")
    clients = list(
        await tx.session.scalars(
            select(Client)
            .where(Client.account_id == account_id, Client.became_client_at.is_not(None))
            .order_by(Client.became_client_at, Client.lead_id)
        )
    )
    mrr: dict[str, Decimal] = {}
    for c in clients:
        if c.mrr_currency and c.mrr:
            mrr[c.mrr_currency] = mrr.get(c.mrr_currency, Decimal(0)) + c.mrr
    revenue: dict[str, Decimal] = {}
    if clients:
        rows = await tx.session.execute(
            select(ClientMoney.currency, func.sum(ClientMoney.amount))
            .where(ClientMoney.lead_id.in_([c.lead_id for c in clients]), ClientMoney.measure == "revenue")
            .group_by(ClientMoney.currency)
        )
        revenue = {currency: Decimal(amount or 0) for currency, amount in rows}
    scored = [c for c in clients if c.health_score is not None]
    worst = min(scored, key=lambda c: (c.health_score, c.lead_id)) if scored else None
    average = (
        (Decimal(sum(c.health_score or 0 for c in scored)) / len(scored)).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_EVEN
        )
        if scored
        else None
    )
    return AccountFigures(account_id, clients, mrr, revenue, worst, average)

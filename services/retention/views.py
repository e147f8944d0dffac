"""What the reads show of clients: one client with the events behind each factor and its
trend, and the list of clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select

from services.retention import domain, record
from services.retention.context import Context
from services.retention.store import Client, ClientEvent, HealthPoint
from shared.uow import UnitOfWork

EVENTS_PER_FACTOR = 20


@dataclass(frozen=True)
class ClientView:
    """A client, its revenue, the latest events behind each factor and its health trend."""

    client: Client
    revenue: dict[str, Decimal]
    events: dict[str, list[ClientEvent]]
    trend: dict[str, Any]


async def client_view(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> ClientView:
    """The client with the events behind each factor (the latest 20 each) and the trend (the
    score now against the score ``trend_days`` ago, or the first one known)."""
    client = await record.get_client(tx, lead_id)
    events: dict[str, list[ClientEvent]] = {}
    for factor, types in domain.FACTOR_EVENTS.items():
        events[factor] = list(
            await tx.session.scalars(
                select(ClientEvent)
                .where(ClientEvent.lead_id == lead_id, ClientEvent.type.in_(types))
                .order_by(ClientEvent.at.desc(), ClientEvent.id.desc())
                .limit(EVENTS_PER_FACTOR)
            )
        )
    policy = ctx.settings.health
    since = tx.now() - timedelta(days=policy.trend_days)
    past = await tx.session.scalar(
        select(HealthPoint.score)
        .where(HealthPoint.lead_id == lead_id, HealthPoint.at <= since)
        .order_by(HealthPoint.at.desc(), HealthPoint.id.desc())
        .limit(1)
    )
    if past is None:
        past = await tx.session.scalar(
            select(HealthPoint.score)
            .where(HealthPoint.lead_id == lead_id)
            .order_by(HealthPoint.at, HealthPoint.id)
            .limit(1)
        )
    trend = domain.trend(client.health_score, past, threshold=policy.trend_threshold)
    return ClientView(client, await record.revenue_of(tx, lead_id), events, trend)


async def list_clients(
    tx: UnitOfWork,
    *,
    tier: str | None,
    band: str | None,
    limit: int,
    offset: int,
    account_owner: uuid.UUID | Literal["none"] | None = None,
    account_id: uuid.UUID | None = None,
) -> tuple[list[Client], int]:
    """Clients (prospects are not listed), oldest first, with the total for paging;
    ``account_owner``: only one person's clients, or (``"none"``) those with no account owner.
    The sales owner is not looked at: once a client, the account owner is who looks after them."""
    query = select(Client).where(Client.became_client_at.is_not(None))
    if tier:
        query = query.where(Client.tier == tier)
    if band:
        query = query.where(Client.band == band)
    if account_id is not None:
        query = query.where(Client.account_id == account_id)
    if account_owner == "none":
        query = query.where(Client.account_owner_id.is_(None))
    elif account_owner is not None:
        query = query.where(Client.account_owner_id == account_owner)
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(query.order_by(Client.became_client_at, Client.lead_id).limit(limit).offset(offset))
    return list(rows), total or 0

"""Unit economics: the facts of a period read from the store and handed to the formulas
(domain/economics.py), the live snapshot (clients, subscriptions, MRR, revenue now), and the
gauges of the trailing period."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from services.retention import domain
from services.retention.context import Context
from services.retention.store import (
    Cancellation,
    ChannelSpend,
    Client,
    ClientEvent,
    ClientMoney,
    MrrMovement,
    Subscription,
)
from shared.errors import Invalid
from shared.reads import ReadPool
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def _readable(amount: Decimal | None, what: str) -> bool:
    """Whether a stored amount is a number. NaN (a fee stored before the contract refused it)
    compared in the figures raised InvalidOperation, and one such row broke the economics of
    every client: it is left out and logged instead."""
    if amount is None or amount.is_finite():
        return True
    log.warning("left out of the economics: %s of %s", what, amount)
    return False


def _leaked(detail: object) -> Decimal | None:
    """The leaked revenue a timeline entry records, or None (none, or a value stored before the
    contract bounded it that reads as no number): one odd entry must not break everyone's
    economics, so it is left out and logged; the tier review reports it as that client's failure."""
    if not isinstance(detail, dict) or detail.get("leaked") in (None, "0"):
        return None
    try:
        amount = Decimal(detail["leaked"])
    except (ArithmeticError, TypeError, ValueError):
        amount = Decimal("NaN")
    if not amount.is_finite():
        log.warning("left out of the economics: an unreadable leaked amount %r", str(detail["leaked"])[:80])
        return None
    return amount


async def economics(
    tx: UnitOfWork, ctx: Context, *, start: datetime, end: datetime, channel: str | None, currency: str | None
) -> dict[str, Any]:
    """Unit economics of [start, end), optionally of one acquisition channel, money in one
    currency (the reporting currency unless asked): the figures of ``domain.economics`` with
    the period, channel, currency and margin they are of. Money is summed in Python: SQLite
    keeps exact decimals as text, where SUM would be a float."""
    if end <= start:
        raise Invalid(f"empty or inverted period: from {start.isoformat()} is not before to {end.isoformat()}")
    policy = ctx.settings.economics
    cur = (currency or policy.reporting_currency).upper()
    session = tx.session
    # Columns, not ORM objects: this reads every client, movement and change request, and
    # hydrating them held the GIL long enough to delay the loop's health checks (py-spy --gil).
    query = select(
        Client.lead_id,
        Client.channel,
        Client.captured_at,
        Client.qualified_at,
        Client.proposed_at,
        Client.won_at,
        Client.became_client_at,
        Client.tier,
    )
    if channel:
        query = query.where(Client.channel == channel)
    clients = (await session.execute(query)).all()
    ids = {c.lead_id for c in clients}
    leads = [
        domain.LeadFacts(
            lead_id=c.lead_id,
            channel=c.channel,
            captured_at=c.captured_at,
            qualified_at=c.qualified_at,
            proposed_at=c.proposed_at,
            won_at=c.won_at,
            client_at=c.became_client_at,
            tier=c.tier,
        )
        for c in clients
    ]
    moves = select(
        MrrMovement.lead_id,
        MrrMovement.at,
        MrrMovement.kind,
        MrrMovement.amount,
        MrrMovement.currency,
        MrrMovement.logo,
    ).order_by(MrrMovement.at, MrrMovement.id)
    movements = [
        domain.Movement(m.lead_id, m.at, m.kind, m.amount, m.currency, m.logo)
        for m in await session.execute(moves)
        if m.lead_id in ids and _readable(m.amount, "an MRR movement")
    ]
    spend_query = select(
        ChannelSpend.channel,
        ChannelSpend.period_start,
        ChannelSpend.period_end,
        ChannelSpend.amount,
        ChannelSpend.currency,
    )
    if channel:
        spend_query = spend_query.where(ChannelSpend.channel == channel)
    spends = [
        domain.Spend(s.channel, s.period_start, s.period_end, s.amount, s.currency)
        for s in await session.execute(spend_query)
        if _readable(s.amount, "a channel's spend")
    ]
    changes = select(ClientEvent.lead_id, ClientEvent.at, ClientEvent.detail).where(
        ClientEvent.type == "deal.change_requested"
    )
    leaked = [
        (e.at, amount, e.detail.get("currency") or "")
        for e in await session.execute(changes)
        if e.lead_id in ids and (amount := _leaked(e.detail)) is not None
    ]
    ended = select(Cancellation.lead_id, Cancellation.decided_at, Cancellation.reason).where(
        Cancellation.status == "completed"
    )
    exits = [
        (c.decided_at, c.reason) for c in await session.execute(ended) if c.lead_id in ids and c.decided_at is not None
    ]
    figures = domain.economics(
        domain.EconomicsInput(
            start=start,
            end=end,
            currency=cur,
            gross_margin=policy.gross_margin,
            leads=leads,
            movements=movements,
            spends=spends,
            leaked=leaked,
            exits=exits,
        )
    )
    figures.update({"from": start, "to": end, "channel": channel, "currency": cur, "gross_margin": policy.gross_margin})
    if not clients:
        figures["reasons"]["period"] = (
            f"no lead or client from channel {channel!r}" if channel else "no lead or client recorded yet"
        )
    return figures


@dataclass(frozen=True)
class Snapshot:
    """Now, whatever the period: clients, subscriptions by status, MRR and revenue by currency."""

    clients: int
    active_subscriptions: int
    paused_subscriptions: int
    mrr: dict[str, Decimal]
    revenue: dict[str, Decimal]
    as_of: datetime


async def snapshot(tx: UnitOfWork) -> Snapshot:
    """Now: clients, subscriptions by status, MRR (paused excluded) and revenue by currency."""
    session = tx.session
    clients = await session.scalar(select(func.count()).where(Client.became_client_at.is_not(None)))
    by_status: dict[str, int] = dict(
        (await session.execute(select(Subscription.status, func.count()).group_by(Subscription.status))).all()
    )
    active = await session.execute(
        select(Subscription.status, Subscription.monthly_fee, Subscription.currency).where(
            Subscription.status == "active"
        )
    )
    mrr = domain.mrr_by_currency(domain.SubscriptionView(*row) for row in active)
    revenue_rows = await session.execute(
        select(ClientMoney.currency, ClientMoney.amount).where(ClientMoney.measure == "revenue")
    )
    return Snapshot(
        clients=clients or 0,
        active_subscriptions=by_status.get("active", 0),
        paused_subscriptions=by_status.get("paused", 0),
        mrr=mrr,
        revenue=domain.add_money({}, revenue_rows),
        as_of=tx.now(),
    )


async def publish_trailing(reads: ReadPool, ctx: Context, now: datetime) -> None:
    """The economics of the trailing period (``economics.trailing_days``, 30 by default) as
    gauges: all channels, then each channel."""
    start = now - ctx.settings.economics.trailing

    async def read(tx: UnitOfWork) -> None:
        # On the read pool: a long computation that must not hold the loop (gauges are thread-safe).
        channels = [c for c in await tx.session.scalars(select(Client.channel).distinct()) if c]
        for channel in [None, *sorted(channels)]:
            figures = await economics(tx, ctx, start=start, end=now, channel=channel, currency=None)
            ctx.metrics.publish_economics(figures, channel=channel or "all")

    await reads.run(read)

"""Channel spend: money spent on each channel, and per channel the leads, clients, cost per
lead and CAC it bought."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from services.leads import domain
from services.leads.commands import SpendIn
from services.leads.store import ChannelSpend, Lead, StageChange
from shared import events as ev
from shared.errors import Invalid
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork


async def record_spend(tx: UnitOfWork, channel: str, data: SpendIn) -> tuple[ChannelSpend, bool]:
    """Money spent on a channel over a period (``channel.spend_recorded``), for CAC. Recording
    the same channel, period and currency again corrects it (the event carries the new amount).
    Returns the row and whether it replaced an earlier figure."""
    channel = channel.lower()
    if channel not in domain.CHANNELS:
        raise Invalid(f"unknown channel {channel!r}; known: {', '.join(sorted(domain.CHANNELS))}")
    start, end = data.bounds()
    row = await tx.session.scalar(
        select(ChannelSpend).where(
            ChannelSpend.channel == channel,
            ChannelSpend.period_start == start,
            ChannelSpend.period_end == end,
            ChannelSpend.currency == data.currency,
        )
    )
    replaced = row is not None
    if row is None:
        row = ChannelSpend(
            id=time_ordered_id(),
            channel=channel,
            period_start=start,
            period_end=end,
            currency=data.currency,
            amount=data.amount,
            recorded_at=tx.now(),
        )
        tx.session.add(row)
    else:
        row.amount = data.amount
        row.recorded_at = tx.now()
    tx.emit(
        "channel.spend_recorded",
        ev.ChannelSpendRecorded(
            channel=channel, period_start=start, period_end=end, amount=data.amount, currency=data.currency
        ),
        lead_id=None,
    )
    return row, replaced


def _per(amounts: dict[str, Decimal], count: int) -> list[dict[str, str]]:
    """Each currency's amount divided by ``count`` (none when the count is 0)."""
    if not count:
        return []
    return [{"amount": str((a / count).quantize(Decimal("0.01"))), "currency": c} for c, a in sorted(amounts.items())]


async def channels(tx: UnitOfWork) -> list[dict[str, Any]]:
    """Per channel: spend by currency, leads, clients (reached `action`), and CAC."""
    spend_rows = await tx.session.execute(select(ChannelSpend.channel, ChannelSpend.currency, ChannelSpend.amount))
    spend: dict[str, dict[str, Decimal]] = {}
    for channel, currency, amount in spend_rows.all():
        spend.setdefault(channel, {}).setdefault(currency, Decimal(0))
        spend[channel][currency] += amount
    lead_rows = await tx.session.execute(
        select(Lead.channel, func.count()).where(Lead.merged_into.is_(None)).group_by(Lead.channel)
    )
    leads: dict[str, int] = dict(lead_rows.all())
    client_rows = await tx.session.execute(
        select(Lead.channel, func.count(func.distinct(StageChange.lead_id)))
        .join(StageChange, StageChange.lead_id == Lead.id)
        .where(StageChange.to_stage == "action", Lead.merged_into.is_(None))
        .group_by(Lead.channel)
    )
    clients: dict[str, int] = dict(client_rows.all())
    out = []
    for channel in sorted(set(spend) | set(leads)):
        amounts = spend.get(channel, {})
        out.append(
            {
                "channel": channel,
                "kind": "inbound" if channel in domain.INBOUND_CHANNELS else "outbound",
                "leads": leads.get(channel, 0),
                "clients": clients.get(channel, 0),
                "spend": [{"amount": str(a), "currency": c} for c, a in sorted(amounts.items())],
                "cost_per_lead": _per(amounts, leads.get(channel, 0)),
                "cac": _per(amounts, clients.get(channel, 0)),
            }
        )
    return out

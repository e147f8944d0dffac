"""Unit economics: the facts of a period read from the store and handed to the formulas
(domain/economics.py), the live snapshot (clients, subscriptions, MRR, revenue now), and the
gauges of the trailing period."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Executable, Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.retention import domain
from services.retention.context import Context
from services.retention.domain import figures as figures_rules
from services.retention.domain import rates as rates_rules
from services.retention.store import (
    Cancellation,
    ChannelSpend,
    Client,
    ClientEvent,
    ClientMoney,
    ExchangeRate,
    MrrMovement,
    Subscription,
    Termination,
)
from shared.errors import Invalid
from shared.reads import ReadPool
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
# Rows fetched at a time by the reads below. A buffered read held every row twice at once (the
# driver's tuples and SQLAlchemy's rows) beside the facts built from them: at 100x history
# (100,000 clients, 66,000 timeline entries) the trailing-economics pass peaked 160 MB above
# the service's resting size; streamed, only the facts are held.
_PAGE = 2000


async def _rows(session: AsyncSession, query: Executable) -> AsyncIterator[Row[Any]]:
    """The rows of ``query`` in order, ``_PAGE`` at a time (never all buffered at once)."""
    result = await session.stream(query.execution_options(yield_per=_PAGE))
    async for part in result.partitions():
        for row in part:
            yield row


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


@dataclass(frozen=True)
class Facts:
    """What the economics of a period are computed from, as read from the store: every
    client's facts (or one channel's), and the money, exits and signals of those clients, each
    with the client it is of (so one read serves every channel: ``only``)."""

    leads: list[domain.LeadFacts]
    movements: list[domain.Movement]
    spends: list[domain.Spend]
    leaked: list[tuple[Any, datetime, Decimal, str]]  # lead, at, amount, currency
    exits: list[tuple[Any, datetime, str]]  # lead, decided at, reason
    terminations: list[tuple[datetime, Any, str]]
    involuntary: list[tuple[datetime, Any]]
    payments: list[figures_rules.Money]
    invoices: list[figures_rules.Money]
    signals: list[figures_rules.Signal]
    with_hours: frozenset[Any]
    retainers: frozenset[Any]
    rates: list[rates_rules.Rate] | None  # read when converting

    def only(self, channel: str) -> Facts:
        """The facts of one acquisition channel's clients (what ``read_facts`` reads for it)."""
        leads = [lead for lead in self.leads if lead.channel == channel]
        ids = {lead.lead_id for lead in leads}
        return Facts(
            leads=leads,
            movements=[m for m in self.movements if m.lead_id in ids],
            spends=[s for s in self.spends if s.channel == channel],
            leaked=[e for e in self.leaked if e[0] in ids],
            exits=[e for e in self.exits if e[0] in ids],
            terminations=[t for t in self.terminations if t[1] in ids],
            involuntary=[i for i in self.involuntary if i[1] in ids],
            payments=[p for p in self.payments if p.lead_id in ids],
            invoices=[i for i in self.invoices if i.lead_id in ids],
            signals=[s for s in self.signals if s.lead_id in ids],
            with_hours=self.with_hours & ids,
            retainers=self.retainers & ids,
            rates=self.rates,
        )


async def economics(
    tx: UnitOfWork,
    ctx: Context,
    *,
    start: datetime,
    end: datetime,
    channel: str | None,
    currency: str | None,
    convert: bool = False,
) -> dict[str, Any]:
    """Unit economics of [start, end), optionally of one acquisition channel, money in one
    currency (the reporting currency unless asked): the figures of ``domain.economics`` and
    ``domain.figures`` with the period, channel, currency and margin they are of. Amounts in
    other currencies are left out, or with ``convert`` converted at the exchange rates set as
    data (``domain.rates``; a missing rate is named in ``reasons``). Money is summed in Python:
    SQLite keeps exact decimals as text, where SUM would be a float."""
    if end <= start:
        raise Invalid(f"empty or inverted period: from {start.isoformat()} is not before to {end.isoformat()}")
    facts = await read_facts(tx, channel=channel, convert=convert)
    return figures_of(facts, ctx, Asked(start, end, channel, currency, convert))


@dataclass(frozen=True)
class Asked:
    """Which economics: the period [start, end), the channel (None: all), the currency (None:
    the reporting currency) and whether other currencies are converted."""

    start: datetime
    end: datetime
    channel: str | None
    currency: str | None
    convert: bool = False


async def read_facts(tx: UnitOfWork, *, channel: str | None, convert: bool = False) -> Facts:
    """The facts of every client, or of one channel's, streamed from the store."""
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
        async for c in _rows(session, query)
    ]
    ids = {lead.lead_id for lead in leads}
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
        async for m in _rows(session, moves)
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
        async for s in _rows(session, spend_query)
        if _readable(s.amount, "a channel's spend")
    ]
    changes = select(ClientEvent.lead_id, ClientEvent.at, ClientEvent.detail).where(
        ClientEvent.type == "deal.change_requested"
    )
    leaked = [
        (e.lead_id, e.at, amount, e.detail.get("currency") or "")
        async for e in _rows(session, changes)
        if e.lead_id in ids and (amount := _leaked(e.detail)) is not None
    ]
    ended = select(Cancellation.lead_id, Cancellation.decided_at, Cancellation.reason).where(
        Cancellation.status == "completed"
    )
    exits = [
        (c.lead_id, c.decided_at, c.reason)
        async for c in _rows(session, ended)
        if c.lead_id in ids and c.decided_at is not None
    ]
    # Terminations (the agency ended it) and exits dunning decided (involuntary) are split from
    # the churn the agency is judged on (domain.split_lost).
    ended_by_agency = select(Termination.lead_id, Termination.effective_at, Termination.reason)
    terminations = [
        (t.effective_at, t.lead_id, t.reason) async for t in _rows(session, ended_by_agency) if t.lead_id in ids
    ]
    involuntary = [
        (c.decided_at, c.lead_id)
        async for c in _rows(session, ended.where(Cancellation.reason == "non_payment"))
        if c.lead_id in ids and c.decided_at is not None
    ]
    timeline = select(ClientEvent.lead_id, ClientEvent.at, ClientEvent.type, ClientEvent.detail).where(
        ClientEvent.type.in_(("payment.succeeded", "invoice.issued", "feedback.received"))
    )
    payments: list[figures_rules.Money] = []
    invoices: list[figures_rules.Money] = []
    signals: list[figures_rules.Signal] = []
    async for e in _rows(session, timeline):
        if e.lead_id not in ids:
            continue
        if e.type == "feedback.received":
            # One odd timeline entry (not a mapping, a score that is no number) must not break
            # everyone's economics: it is read as what it can be read as.
            detail = e.detail if isinstance(e.detail, dict) else {}
            signals.append(figures_rules.Signal(e.lead_id, e.at, "feedback", _score(detail.get("score"))))
            if detail.get("complaint") is True:
                signals.append(figures_rules.Signal(e.lead_id, e.at, "complaint"))
        elif (money := _money(e.lead_id, e.at, e.detail)) is not None:
            (payments if e.type == "payment.succeeded" else invoices).append(money)
    unhappy_exits = select(Cancellation.lead_id, Cancellation.created_at).where(Cancellation.reason == "poor_results")
    signals += [
        figures_rules.Signal(c.lead_id, c.created_at, "poor_results")
        async for c in _rows(session, unhappy_exits)
        if c.lead_id in ids
    ]
    hours = select(Client.lead_id, Client.hours_included).where(Client.hours_included.is_not(None))
    with_hours = frozenset([c.lead_id async for c in _rows(session, hours) if c.hours_included and c.lead_id in ids])
    retainers = frozenset(
        lead_id for lead_id in await session.scalars(select(Subscription.lead_id).distinct()) if lead_id in ids
    )
    rates = None
    if convert:
        rates = [rate for r in await session.scalars(select(ExchangeRate)) if (rate := _rate(r)) is not None]
    return Facts(
        leads=leads,
        movements=movements,
        spends=spends,
        leaked=leaked,
        exits=exits,
        terminations=terminations,
        involuntary=involuntary,
        payments=payments,
        invoices=invoices,
        signals=signals,
        with_hours=with_hours,
        retainers=retainers,
        rates=rates,
    )


def figures_of(facts: Facts, ctx: Context, asked: Asked) -> dict[str, Any]:
    """The figures of ``economics`` from facts already read (see there)."""
    start, end, channel, currency, convert = asked.start, asked.end, asked.channel, asked.currency, asked.convert
    policy = ctx.settings.economics
    cur = (currency or policy.reporting_currency).upper()
    movements, spends, payments, invoices = facts.movements, facts.spends, facts.payments, facts.invoices
    leaked = [(at, amount, currency) for _, at, amount, currency in facts.leaked]
    missing: str | None = None
    if convert:
        into = rates_rules.Converter(cur, facts.rates or [])
        movements = [
            domain.Movement(m.lead_id, m.at, m.kind, amount, cur, m.logo)
            for m in movements
            if (amount := into.convert(m.amount, m.currency, m.at)) is not None
        ]
        spends = [
            domain.Spend(s.channel, s.start, s.end, amount, cur)
            for s in spends
            if (amount := into.convert(s.amount, s.currency, _day(s.start))) is not None
        ]
        leaked = [(t, amount, cur) for t, a, c in leaked if (amount := into.convert(a, c, t)) is not None]
        payments = [m for p in payments if (m := _converted(into, p)) is not None]
        invoices = [m for i in invoices if (m := _converted(into, i)) is not None]
        missing = into.reason()
    figures = domain.economics(
        domain.EconomicsInput(
            start=start,
            end=end,
            currency=cur,
            gross_margin=policy.gross_margin,
            leads=facts.leads,
            movements=movements,
            spends=spends,
            leaked=leaked,
            exits=[(at, reason) for _, at, reason in facts.exits],
            terminations=facts.terminations,
            involuntary=facts.involuntary,
        )
    )
    agency = figures_rules.figures(
        figures_rules.FiguresInput(
            start=start,
            end=end,
            currency=cur,
            leads=facts.leads,
            movements=movements,
            spends=spends,
            payments=payments,
            invoices=invoices,
            signals=facts.signals,
            with_hours=facts.with_hours,
            retainer_clients=facts.retainers,
        )
    )
    figures["reasons"].update(agency.pop("figure_reasons"))
    figures.update(agency)
    figures.update(
        {
            "from": start,
            "to": end,
            "channel": channel,
            "currency": cur,
            "gross_margin": policy.gross_margin,
            "converted": convert,
        }
    )
    if missing:
        figures["reasons"]["exchange_rates"] = missing
    if not facts.leads:
        figures["reasons"]["period"] = (
            f"no lead or client from channel {channel!r}" if channel else "no lead or client recorded yet"
        )
    return figures


# The contract's bound on money (shared/money.py): a stored amount beyond it was never valid.
_MAX_MONEY = Decimal(10) ** 12


def _money(lead_id: Any, at: datetime, detail: object) -> figures_rules.Money | None:
    """A payment or invoice the timeline records, or None when it reads as no amount."""
    if not isinstance(detail, dict) or detail.get("amount") is None or not detail.get("currency"):
        return None
    try:
        amount = Decimal(str(detail["amount"]))
    except (ArithmeticError, TypeError, ValueError):
        return None
    if not _readable(amount, "a payment or invoice") or abs(amount) > _MAX_MONEY:
        return None
    return figures_rules.Money(lead_id, at, amount, str(detail["currency"]))


def _rate(row: ExchangeRate) -> rates_rules.Rate | None:
    """A stored rate, or None (logged) when it reads as no positive number."""
    try:
        rate = rates_rules.Rate(row.currency, row.quote, row.valid_from, Decimal(row.rate_text))
        rates_rules.check_rate(rate)
    except (ArithmeticError, TypeError, ValueError):
        log.warning(
            "left out of the economics: the exchange rate %s->%s from %s", row.currency, row.quote, row.valid_from
        )
        return None
    return rate


def _score(value: object) -> int | None:
    """A survey score as stored (0-10), or None when it reads as no score."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        score = int(value)
    except ValueError:
        return None
    return score if 0 <= score <= 10 else None


def _converted(into: rates_rules.Converter, m: figures_rules.Money) -> figures_rules.Money | None:
    amount = into.convert(m.amount, m.currency, m.at)
    return None if amount is None else figures_rules.Money(m.lead_id, m.at, amount, into.reporting)


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


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
        # The store is read once; each channel's figures come from its share of those facts
        # (reading it again per channel made a pass over 100,000 clients five passes).
        facts = await read_facts(tx, channel=None)
        channels = sorted({lead.channel for lead in facts.leads if lead.channel})
        for channel in [None, *channels]:
            mine = facts if channel is None else facts.only(channel)
            figures = figures_of(mine, ctx, Asked(start, now, channel, None))
            ctx.metrics.publish_economics(figures, channel=channel or "all")

    await reads.run(read)

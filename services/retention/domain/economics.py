"""How the unit economics of a period are computed (docs/design.md, "Business rules": unit
economics per acquisition channel), from dated facts: leads and their funnel moments, the MRR
movements ledger, channel spend, leaked scope and exits.

- NRR = (MRR at the start + expansion - contraction - churn) / MRR at the start, counting the
  movements of the clients who were there at the start (``net_revenue_retention``);
  GRR = (start - contraction - churn) / start; revenue churn = (contraction + churn) / start.
- Logo churn = clients lost in the period / clients at its start; monthly = that / months.
- ARPA = MRR at the end / clients paying MRR; LTV = ARPA x gross margin / monthly logo churn.
- CAC = channel spend in the period / new clients; LTV:CAC; payback months = CAC / (ARPA x margin).

A figure whose denominator is zero is None, with its reason.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from shared.money import quantize

MOVEMENT_KINDS = ("new", "expansion", "contraction", "churn", "pause", "resume")
# The MRR a subscription took with it when the agency ended the relationship (a termination): a
# movement of its own kind on the ledger, reported apart (``terminations_line``), never churn
# (logo or revenue), NRR or GRR, so not one of the MOVEMENT_KINDS the figures sum.
TERMINATED = "terminated"
FUNNEL = ("leads", "qualified", "proposed", "won", "clients")

_SIGN = {"new": 1, "expansion": 1, "resume": 1, "contraction": -1, "churn": -1, "pause": -1, TERMINATED: -1}
_RATE = Decimal("0.0001")
_MONTH = Decimal("0.01")


class EconomicsPolicy(BaseModel):
    """The margin LTV counts, the currency money figures are in, the gauges' period."""

    model_config = ConfigDict(frozen=True)

    gross_margin: Decimal = Field(default=Decimal("0.5"), gt=0, le=1, description="share of revenue kept (LTV)")
    reporting_currency: str = Field(default="EUR", min_length=3, max_length=3, description="money figures in it")
    trailing_days: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices("trailing_days", "economics_trailing_days"),
        description="the period the economics gauges cover, ending now",
    )

    @property
    def trailing(self) -> timedelta:
        return timedelta(days=self.trailing_days)


# --------------------------------------------------------------------------- the facts


@dataclass(frozen=True, slots=True)  # one per client or movement: 100,000s at once
class Movement:
    """One change of MRR. ``logo`` is +1 when the client starts paying or being paused (a
    client), -1 when its last running subscription ends (churned), else 0."""

    lead_id: Any
    at: datetime
    kind: str
    amount: Decimal
    currency: str
    logo: int = 0


@dataclass(frozen=True, slots=True)  # one per client or movement: 100,000s at once
class LeadFacts:
    """A lead's acquisition channel, its funnel moments and its tier."""

    lead_id: Any
    channel: str | None
    captured_at: datetime | None
    qualified_at: datetime | None = None
    proposed_at: datetime | None = None
    won_at: datetime | None = None
    client_at: datetime | None = None
    tier: str | None = None


@dataclass(frozen=True)
class Spend:
    """Acquisition spend of a channel over a period."""

    channel: str
    start: date
    end: date  # inclusive, as a marketing report states it
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class EconomicsInput:
    """The period, its currency and margin, and every fact the figures are computed from."""

    start: datetime
    end: datetime
    currency: str
    gross_margin: Decimal
    leads: list[LeadFacts]
    movements: list[Movement]  # every client's, every currency
    spends: list[Spend]
    leaked: list[tuple[datetime, Decimal, str]] = field(default_factory=list)
    exits: list[tuple[datetime, str]] = field(default_factory=list)
    # (effective_at, lead_id, reason) of every termination (the agency ended it).
    terminations: list[tuple[datetime, Any, str]] = field(default_factory=list)
    # (decided_at, lead_id) of every exit billing's dunning decided (non-payment: involuntary churn).
    involuntary: list[tuple[datetime, Any]] = field(default_factory=list)


def leaked_revenue(*, in_scope: bool, amount: Decimal, hours: Decimal | None, hourly_rate: Decimal | None) -> Decimal:
    """Out-of-scope work is accepted only as a paid change order: an out-of-scope ask with no
    price slipped through unbilled, and its hours at the deal's rate are leaked revenue."""
    if in_scope or amount != 0 or not hours or not hourly_rate:
        return Decimal(0)
    return quantize(hours * hourly_rate)


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class LogoChurn:
    """Clients lost over the clients they came from, or why there is no rate."""

    rate: Decimal | None
    lost: int
    base: int
    reason: str | None = None


def logo_churn(*, lost: int, base: int) -> LogoChurn:
    """Lost clients over the clients they came from; no base, no rate (never a division by 0)."""
    if base <= 0:
        return LogoChurn(None, lost, base, "no client has ever subscribed: churn is undefined")
    rate = (Decimal(lost) / Decimal(base)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return LogoChurn(rate, lost, base)


def ratio(numerator: Decimal | int, denominator: Decimal | int, places: Decimal = _RATE) -> Decimal | None:
    """numerator / denominator rounded half up, or None when the denominator is 0."""
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(places, rounding=ROUND_HALF_UP)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` later (the month's last day when it is shorter)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def months_between(start: datetime, end: datetime) -> Decimal:
    """Calendar months from ``start`` to ``end``: whole months plus the share of the next."""
    whole = 0
    while add_months(start, whole + 1) <= end:
        whole += 1
    here, after = add_months(start, whole), add_months(start, whole + 1)
    part = Decimal(str((end - here).total_seconds())) / Decimal(str((after - here).total_seconds()))
    return Decimal(whole) + part


def mrr_at(movements: Iterable[Movement], moment: datetime, currency: str) -> Decimal:
    """MRR just before ``moment`` (movements at ``moment`` belong to the period it starts)."""
    return sum((_SIGN[m.kind] * m.amount for m in movements if m.at < moment and m.currency == currency), Decimal(0))


def running_at(movements: Iterable[Movement], moment: datetime) -> bool:
    """A client (paying or paused) just before ``moment``."""
    return sum(m.logo for m in movements if m.at < moment) > 0


def spend_in(spends: Iterable[Spend], *, start: datetime, end: datetime, currency: str) -> Decimal:
    """Spend falling in [start, end), pro rata by day of each spend's own period."""
    total = Decimal(0)
    for s in spends:
        if s.currency != currency:
            continue
        s_start = datetime(s.start.year, s.start.month, s.start.day, tzinfo=UTC)
        s_end = datetime(s.end.year, s.end.month, s.end.day, tzinfo=UTC) + timedelta(days=1)
        overlap = (min(end, s_end) - max(start, s_start)).total_seconds()
        if overlap > 0:
            total += s.amount * Decimal(str(overlap)) / Decimal(str((s_end - s_start).total_seconds()))
    return quantize(total)


def net_revenue_retention(mrr_start: Decimal, moves: Mapping[str, Decimal]) -> Decimal | None:
    """NRR = (start + expansion - contraction - churn) / start, ``moves`` being the movements
    of the clients there at the start (a new client's MRR is not retained revenue)."""
    return ratio(mrr_start + moves["expansion"] - moves["contraction"] - moves["churn"], mrr_start)


def gross_revenue_retention(mrr_start: Decimal, moves: Mapping[str, Decimal]) -> Decimal | None:
    """GRR = (start - contraction - churn) / start: NRR without expansion."""
    return ratio(mrr_start - moves["contraction"] - moves["churn"], mrr_start)


def revenue_churn(mrr_start: Decimal, moves: Mapping[str, Decimal]) -> Decimal | None:
    """(contraction + churn) / start."""
    return ratio(moves["contraction"] + moves["churn"], mrr_start)


@dataclass(frozen=True)
class ChurnSplit:
    """The clients who left in a period, by who ended it: the client (voluntary), billing's
    dunning (involuntary: non-payment) or the agency (a termination, not churn)."""

    voluntary: frozenset[Any]
    involuntary: frozenset[Any]
    terminated: frozenset[Any]

    @property
    def churned(self) -> frozenset[Any]:
        """The churn the agency is judged on: voluntary and involuntary, never terminations."""
        return self.voluntary | self.involuntary


def split_lost(
    lost: Iterable[Any],
    by_client: Mapping[Any, list[Movement]],
    *,
    start: datetime,
    end: datetime,
    involuntary: Iterable[Any] = (),
) -> ChurnSplit:
    """Split the clients lost in [start, end): one whose last leaving movement (logo -1) in the
    period is ``terminated`` was let go by the agency; of the others, those whose exit billing's
    dunning decided are involuntary churn, the rest voluntary."""
    terminated: set[Any] = set()
    churned: set[Any] = set()
    for client in lost:
        leaving = [m for m in by_client.get(client, []) if m.logo < 0 and start <= m.at < end]
        (terminated if leaving and leaving[-1].kind == TERMINATED else churned).add(client)
    unpaid = churned & set(involuntary)
    return ChurnSplit(frozenset(churned - unpaid), frozenset(unpaid), frozenset(terminated))


def terminations_line(data: EconomicsInput, channels: Mapping[Any, str | None]) -> dict[str, Any]:
    """Terminations effective in the period, their own line: how many, the MRR they took (the
    ``terminated`` movements, in the period's currency), by reason and by channel."""
    start, end, cur = data.start, data.end, data.currency
    by_reason: dict[str, int] = {}
    by_channel: dict[str, dict[str, Any]] = {}
    count = 0
    for moment, lead_id, reason in data.terminations:
        if start <= moment < end:
            count += 1
            by_reason[reason] = by_reason.get(reason, 0) + 1
            line = by_channel.setdefault(channels.get(lead_id) or "unknown", {"count": 0, "mrr": Decimal(0)})
            line["count"] += 1
    mrr = Decimal(0)
    for m in data.movements:
        if m.kind == TERMINATED and m.currency == cur and start <= m.at < end:
            mrr += m.amount
            line = by_channel.setdefault(channels.get(m.lead_id) or "unknown", {"count": 0, "mrr": Decimal(0)})
            line["mrr"] += m.amount
    return {
        "count": count,
        "mrr": quantize(mrr),
        "by_reason": dict(sorted(by_reason.items())),
        "by_channel": {ch: {"count": v["count"], "mrr": quantize(v["mrr"])} for ch, v in sorted(by_channel.items())},
    }


# --------------------------------------------------------------------------- the figures


def _funnel(data: EconomicsInput, reasons: dict[str, str]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Leads captured in the period and how many of them reached each stage."""
    cohort = [lead for lead in data.leads if _inside(lead.captured_at, data)]
    stages = {
        "leads": len(cohort),
        "qualified": sum(1 for lead in cohort if lead.qualified_at),
        "proposed": sum(1 for lead in cohort if lead.proposed_at),
        "won": sum(1 for lead in cohort if lead.won_at),
        "clients": sum(1 for lead in cohort if lead.client_at),
    }
    funnel = []
    for i, stage in enumerate(FUNNEL):
        previous = stages[FUNNEL[i - 1]] if i else None
        funnel.append(
            {
                "stage": stage,
                "count": stages[stage],
                "from_previous": ratio(stages[stage], previous) if previous is not None else None,
                "from_leads": ratio(stages[stage], stages["leads"]),
            }
        )
    if not cohort:
        reasons["funnel"] = "no lead captured in the period"
    return stages, funnel


def _inside(moment: datetime | None, data: EconomicsInput) -> bool:
    return moment is not None and data.start <= moment < data.end


def economics(data: EconomicsInput) -> dict[str, Any]:
    """Every figure of the period [start, end) by the formulas above; a figure whose
    denominator is zero is None, and ``reasons`` says why."""
    start, end, cur = data.start, data.end, data.currency
    reasons: dict[str, str] = {}
    by_client: dict[Any, list[Movement]] = {}
    for m in sorted(data.movements, key=lambda m: m.at):
        by_client.setdefault(m.lead_id, []).append(m)

    stages, funnel = _funnel(data, reasons)
    new_clients = sum(1 for lead in data.leads if _inside(lead.client_at, data))
    spend = spend_in(data.spends, start=start, end=end, currency=cur)
    cac = ratio(spend, new_clients, _MONTH)
    if cac is None:
        reasons["cac"] = "no new client in the period"

    at_start = {c for c, ms in by_client.items() if running_at(ms, start)}
    at_end = {c for c, ms in by_client.items() if running_at(ms, end)}
    # Terminations are not churn: the agency let them go (see ``split_lost``).
    split = split_lost(
        at_start - at_end,
        by_client,
        start=start,
        end=end,
        involuntary=[c for t, c in data.involuntary if start <= t < end],
    )
    lost = set(split.churned)
    churn_rate = ratio(len(lost), len(at_start))
    months = months_between(start, end)
    monthly_churn = (
        (Decimal(len(lost)) / Decimal(len(at_start)) / months).quantize(_RATE, rounding=ROUND_HALF_UP)
        if at_start
        else None
    )
    if churn_rate is None:
        reasons["logo_churn"] = "no client at the start of the period"

    mrr_start = mrr_at(data.movements, start, cur)
    mrr_end = mrr_at(data.movements, end, cur)
    moves = dict.fromkeys(MOVEMENT_KINDS, Decimal(0))
    from_start = dict.fromkeys(MOVEMENT_KINDS, Decimal(0))
    for m in data.movements:
        if m.currency == cur and start <= m.at < end and m.kind in moves:
            moves[m.kind] += m.amount
            if m.lead_id in at_start:
                from_start[m.kind] += m.amount
    if mrr_start == 0:
        reasons["nrr"] = reasons["grr"] = reasons["revenue_churn"] = f"no {cur} MRR at the start of the period"

    paying = [c for c, ms in by_client.items() if mrr_at(ms, end, cur) > 0]
    arpa = ratio(mrr_end, len(paying), _MONTH)
    if arpa is None:
        reasons["arpa"] = f"no client paying {cur} MRR at the end of the period"
    ltv = None
    if arpa is not None and monthly_churn:
        ltv = quantize(arpa * data.gross_margin / monthly_churn)
    elif arpa is not None:
        reasons["ltv"] = "no client lost in the period: lifetime value is unbounded"
    else:
        reasons["ltv"] = reasons["arpa"]
    ltv_cac = ratio(ltv, cac, _MONTH) if ltv is not None and cac else None
    if ltv_cac is None:
        reasons["ltv_cac"] = "needs both LTV and CAC"
    payback = ratio(cac, arpa * data.gross_margin, _MONTH) if cac is not None and arpa else None
    if payback is None:
        reasons["payback_months"] = "needs both CAC and ARPA"

    tiers = {lead.lead_id: lead.tier for lead in data.leads}
    fire = sum(1 for c in at_end if tiers.get(c) == "fire")
    leaked = quantize(sum((a for t, a, c in data.leaked if c == cur and start <= t < end), Decimal(0)))
    exits: dict[str, int] = {}
    for moment, reason in data.exits:
        if start <= moment < end:
            exits[reason] = exits.get(reason, 0) + 1
    return {
        "leads": stages["leads"],
        "funnel": funnel,
        "new_clients": new_clients,
        "spend": spend,
        "cac": cac,
        "clients_at_start": len(at_start),
        "clients_at_end": len(at_end),
        "clients_lost": len(lost),
        "logo_churn": churn_rate,
        "monthly_logo_churn": monthly_churn,
        "months": months.quantize(_RATE, rounding=ROUND_HALF_UP),
        "mrr_start": mrr_start,
        "mrr_end": mrr_end,
        "mrr_movements": moves,
        "nrr": net_revenue_retention(mrr_start, from_start),
        "grr": gross_revenue_retention(mrr_start, from_start),
        "revenue_churn": revenue_churn(mrr_start, from_start),
        "arpa": arpa,
        "ltv": ltv,
        "ltv_cac": ltv_cac,
        "payback_months": payback,
        "fire_clients": fire,
        "fire_share": ratio(fire, len(at_end)),
        "leaked_revenue": leaked,
        "exit_reasons": dict(sorted(exits.items())),
        "churn_split": {
            "voluntary": len(split.voluntary),
            "involuntary": len(split.involuntary),
            "terminated": len(split.terminated),
        },
        "terminations": terminations_line(data, {lead.lead_id: lead.channel for lead in data.leads}),
        "cohorts": cohort_table(by_client, end=end, start=start),
        "reasons": reasons,
    }


def cohort_table(by_client: Mapping[Any, list[Movement]], *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Retention by acquisition month (the month a client first subscribed, from ``start``'s
    month on): for each month after, the share still a client (paused counts) at its end.
    Only months that have ended by ``end`` are shown."""
    first_month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    groups: dict[datetime, list[list[Movement]]] = {}
    for ms in by_client.values():
        joined = next((m.at for m in ms if m.logo > 0), None)
        if joined is None:
            continue
        month = joined.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if first_month <= month < end:
            groups.setdefault(month, []).append(ms)
    rows = []
    for month in sorted(groups):
        members = groups[month]
        shares = []
        k = 1
        while add_months(month, k) <= end:
            moment = add_months(month, k)
            shares.append(ratio(sum(1 for ms in members if running_at(ms, moment)), len(members)))
            k += 1
        rows.append({"cohort": f"{month.year}-{month.month:02d}", "clients": len(members), "retention": shares})
    return rows

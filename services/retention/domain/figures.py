"""The figures the agency's own notes judge it by, beyond the unit economics of
``domain/economics.py``; each from plain dated facts, for the period [start, end):

- **ROI per channel**: (first-year revenue of the clients the channel brought in the period -
  the channel's spend in the period) / that spend. First-year revenue is what those clients
  paid within a year of becoming clients (up to ``end``: a young cohort's ROI grows as it pays).
  **Cost per lead** and **per qualified lead**: the spend over the leads captured in the period
  (and over those of them qualified).
- **Revenue retention over a year**, as of a moment: revenue in the year before it from the
  clients who were already clients a year before it, over their revenue the year before that,
  annualised for those who joined during it (the notes' "130% revenue from a retention year");
  its trend is that ratio at each month end.
- **Client lifetime**: months from becoming a client to leaving (the last running subscription
  ended, a termination included): the median by the product-limit estimate (clients still
  running count as staying so far, not as gone), and the distribution of the lifetimes that are
  over.
- **Leak**: the clients who left in the period unhappy (a complaint, feedback of 6 or less, or a
  cancellation for ``poor_results`` within the 60 days before they left) over the clients served
  in the period (there at its start or joined during it), against the goal of under 5%.
- **Included hours**: retainer clients with included hours against those without: how many,
  their median lifetime (product-limit) and average lifetime so far in months, their average
  revenue, and how many months longer the first stay (by the medians when both are known).
- **New against old clients**, per month: average invoice and revenue per paying client of
  clients in their first six months against the older ones.

Amounts are in the period's currency (others are left out unless converted first, see
``domain/rates.py``). A figure whose denominator is zero is None.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.retention.domain.economics import (
    TERMINATED,
    LeadFacts,
    Movement,
    Spend,
    add_months,
    months_between,
    ratio,
    running_at,
    spend_in,
)
from shared.money import quantize

LEAK_GOAL = Decimal("0.05")
LEAK_WINDOW = timedelta(days=60)
# Feedback scores (0-10) at or under this are unhappy (an NPS detractor).
UNHAPPY_SCORE = 6
NEW_CLIENT_MONTHS = 6
LIFETIME_BUCKETS = ((0, 3), (3, 6), (6, 12), (12, 24), (24, None))
_MONTH = Decimal("0.01")


@dataclass(frozen=True, slots=True)  # one per payment, invoice or signal: 100,000s at once
class Money:
    """An amount a client paid (a payment) or was asked (an invoice), dated."""

    lead_id: Any
    at: datetime
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)  # one per payment, invoice or signal: 100,000s at once
class Signal:
    """Something that says a client was unhappy: ``complaint``, ``feedback`` (with its score)
    or ``poor_results`` (a cancellation's reason)."""

    lead_id: Any
    at: datetime
    kind: str
    score: int | None = None

    @property
    def unhappy(self) -> bool:
        if self.kind == "feedback":
            return self.score is not None and self.score <= UNHAPPY_SCORE
        return self.kind in ("complaint", "poor_results")


@dataclass(frozen=True)
class FiguresInput:
    start: datetime
    end: datetime
    currency: str
    leads: list[LeadFacts]
    movements: list[Movement]
    spends: list[Spend]
    payments: list[Money]
    invoices: list[Money]
    signals: list[Signal]
    # Clients whose retainer includes hours (from ``subscription.started``).
    with_hours: frozenset[Any]
    retainer_clients: frozenset[Any]


def _joined(ms: list[Movement]) -> datetime | None:
    return next((m.at for m in ms if m.logo > 0), None)


def _left(ms: list[Movement], end: datetime) -> datetime | None:
    """When the client stopped being one (the logo count went to 0), if they had by ``end``."""
    count = 0
    left = None
    for m in ms:
        if m.at >= end:
            break
        count += m.logo
        if m.logo < 0 and count <= 0:
            left = m.at
        elif m.logo > 0:
            left = None
    return left


def _by_client(movements: Iterable[Movement]) -> dict[Any, list[Movement]]:
    out: dict[Any, list[Movement]] = {}
    for m in sorted(movements, key=lambda m: m.at):
        out.setdefault(m.lead_id, []).append(m)
    return out


def _paid(payments: Iterable[Money], currency: str) -> list[Money]:
    return [p for p in payments if p.currency == currency]


# --------------------------------------------------------------------------- ROI and lead cost


def channel_returns(data: FiguresInput) -> dict[str, dict[str, Any]]:
    """Per channel: spend, leads, qualified leads, cost per lead and per qualified lead, new
    clients, their first-year revenue and the ROI of the period."""
    start, end, cur = data.start, data.end, data.currency
    paid = _paid(data.payments, cur)
    out: dict[str, dict[str, Any]] = {}
    channels = sorted({lead.channel for lead in data.leads if lead.channel} | {s.channel for s in data.spends})
    for channel in channels:
        leads = [lead for lead in data.leads if lead.channel == channel and _in(lead.captured_at, start, end)]
        qualified = [lead for lead in leads if lead.qualified_at is not None]
        # Each new client of the channel in the period, and the end of their first year.
        new: dict[Any, datetime] = {
            lead.lead_id: min(end, lead.client_at + timedelta(days=365))
            for lead in data.leads
            if lead.channel == channel and lead.client_at is not None and start <= lead.client_at < end
        }
        spend = spend_in([s for s in data.spends if s.channel == channel], start=start, end=end, currency=cur)
        first_year = quantize(
            sum(
                (p.amount for p in paid if p.lead_id in new and p.at < new[p.lead_id]),
                Decimal(0),
            )
        )
        out[channel] = {
            "spend": spend,
            "leads": len(leads),
            "qualified_leads": len(qualified),
            "cost_per_lead": ratio(spend, len(leads), _MONTH) if spend else None,
            "cost_per_qualified_lead": ratio(spend, len(qualified), _MONTH) if spend else None,
            "new_clients": len(new),
            "first_year_revenue": first_year,
            "roi": ratio(first_year - spend, spend),
        }
    return out


def _in(moment: datetime | None, start: datetime, end: datetime) -> bool:
    return moment is not None and start <= moment < end


def totals(by_channel: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The channels' returns added up: ROI and lead costs of the whole selection."""
    spend = quantize(sum((c["spend"] for c in by_channel.values()), Decimal(0)))
    revenue = quantize(sum((c["first_year_revenue"] for c in by_channel.values()), Decimal(0)))
    leads = sum(c["leads"] for c in by_channel.values())
    qualified = sum(c["qualified_leads"] for c in by_channel.values())
    return {
        "spend": spend,
        "first_year_revenue": revenue,
        "roi": ratio(revenue - spend, spend),
        "cost_per_lead": ratio(spend, leads, _MONTH) if spend else None,
        "cost_per_qualified_lead": ratio(spend, qualified, _MONTH) if spend else None,
    }


# --------------------------------------------------------------------------- a retention year


# A client must have been one this long in the year before to annualise their revenue then.
MIN_PRIOR_DAYS = 28


def yearly_revenue_retention(
    payments: Iterable[Money],
    joined: Mapping[Any, datetime],
    *,
    at: datetime,
    currency: str,
    staying: frozenset[Any] | None = None,
) -> dict[str, Any]:
    """As of ``at``: the revenue of the last year from clients who were clients a year before
    ``at``, over their revenue in the year before that. A client who joined during that earlier
    year had only part of it to pay in, so their revenue then is annualised (times 365 over the
    days they were a client); one who had under four weeks of it is left out of both sums."""
    year_ago, two_years_ago = at - timedelta(days=365), at - timedelta(days=730)
    share: dict[Any, Decimal] = {}
    for client, since in joined.items():
        days = (year_ago - max(since, two_years_ago)).total_seconds() / 86400
        if since < year_ago and days >= MIN_PRIOR_DAYS:
            share[client] = Decimal(365) / Decimal(str(min(days, 365.0)))
    this_year = prior = Decimal(0)
    kept_this = kept_prior = Decimal(0)  # the same, of those still clients at ``at``
    for p in payments:
        if p.currency != currency or p.lead_id not in share:
            continue
        stays = staying is not None and p.lead_id in staying
        if year_ago <= p.at < at:
            this_year += p.amount
            kept_this += p.amount if stays else 0
        elif two_years_ago <= p.at < year_ago:
            prior += p.amount * share[p.lead_id]
            kept_prior += p.amount * share[p.lead_id] if stays else 0
    figure = {
        "ratio": ratio(this_year, prior),
        "clients": len(share),
        "revenue_this_year": quantize(this_year),
        "revenue_year_before": quantize(prior),
    }
    if staying is not None:
        # The revenue a retention year brings a client who stayed it (the notes' 130% read as
        # what a kept client grows to), beside the whole cohort's, leavers included.
        figure["stayed_ratio"] = ratio(kept_this, kept_prior)
        figure["stayed_clients"] = len(set(share) & staying)
    return figure


def retention_trend(
    payments: list[Money], joined: Mapping[Any, datetime], *, start: datetime, end: datetime, currency: str
) -> list[dict[str, Any]]:
    """The year's revenue retention at the end of each month of [start, end)."""
    first = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = []
    k = 1
    while (moment := add_months(first, k)) <= end:
        figure = yearly_revenue_retention(payments, joined, at=moment, currency=currency)
        rows.append({"month": f"{add_months(first, k - 1):%Y-%m}", "ratio": figure["ratio"]})
        k += 1
    return rows


# --------------------------------------------------------------------------- lifetime and leak


def lifetimes(by_client: Mapping[Any, list[Movement]], *, end: datetime) -> dict[Any, tuple[Decimal, bool]]:
    """Each client's lifetime in months by ``end`` and whether it is over (they left)."""
    out: dict[Any, tuple[Decimal, bool]] = {}
    for client, ms in by_client.items():
        joined = _joined(ms)
        if joined is None or joined >= end:
            continue
        left = _left(ms, end)
        out[client] = (months_between(joined, left or end).quantize(_MONTH, rounding=ROUND_HALF_UP), left is not None)
    return out


def median_survival(spans: Iterable[tuple[Decimal, bool]]) -> Decimal | None:
    """The median lifetime by the product-limit (Kaplan-Meier) estimate: the first lifetime at
    which the share of clients still staying falls to one half, counting the clients still
    running as staying up to now (censored), not as gone; the plain median of the lifetimes that
    are over would understate it (early leavers are over first). None until half have left."""
    ordered = sorted(spans, key=lambda span: (span[0], not span[1]))
    at_risk = len(ordered)
    staying = Decimal(1)
    i = 0
    while i < len(ordered):
        months = ordered[i][0]
        left = censored = 0
        while i < len(ordered) and ordered[i][0] == months:
            left += ordered[i][1]
            censored += not ordered[i][1]
            i += 1
        if left:
            staying *= 1 - Decimal(left) / Decimal(at_risk)
            if staying <= Decimal("0.5"):
                return months
        at_risk -= left + censored
    return None


def lifetime_figures(spans: Mapping[Any, tuple[Decimal, bool]]) -> dict[str, Any]:
    """The median lifetime (``median_survival``), the distribution of the lifetimes that are
    over, and the still running counted apart."""
    over = sorted(months for months, ended in spans.values() if ended)
    buckets = []
    for low, high in LIFETIME_BUCKETS:
        n = sum(1 for m in over if m >= low and (high is None or m < high))
        buckets.append({"months": f"{low}-{high}" if high is not None else f"{low}+", "clients": n})
    running = [months for months, ended in spans.values() if not ended]
    return {
        "median_lifetime_months": median_survival(spans.values()),
        "median_of_those_who_left": quantize(Decimal(statistics.median(over))) if over else None,
        "lifetime_distribution": buckets,
        "clients_left": len(over),
        "clients_running": len(running),
        "median_tenure_running_months": quantize(Decimal(statistics.median(running))) if running else None,
    }


def leak(
    by_client: Mapping[Any, list[Movement]], signals: Iterable[Signal], *, start: datetime, end: datetime
) -> dict[str, Any]:
    """The clients who left in [start, end) unhappy, over the clients served in the period (a
    client at its start or one who joined during it); terminations (the agency let them go) are
    not a leak."""
    served = {
        c for c, ms in by_client.items() if running_at(ms, start) or any(m.logo > 0 and start <= m.at < end for m in ms)
    }
    unhappy_at: dict[Any, list[datetime]] = {}
    for s in signals:
        if s.unhappy:
            unhappy_at.setdefault(s.lead_id, []).append(s.at)
    unhappy = 0
    left = 0
    for client, ms in by_client.items():
        gone = _left(ms, end)
        if gone is None or gone < start or client not in served:
            continue
        last = next((m for m in reversed(ms) if m.logo < 0 and m.at == gone), None)
        if last is not None and last.kind == TERMINATED:
            continue
        left += 1
        if any(gone - LEAK_WINDOW <= t <= gone for t in unhappy_at.get(client, [])):
            unhappy += 1
    share = ratio(unhappy, len(served))
    return {
        "share": share,
        "unhappy": unhappy,
        "left": left,
        "clients": len(served),
        "goal": LEAK_GOAL,
        "goal_met": share is not None and share < LEAK_GOAL,
    }


# --------------------------------------------------------------------------- included hours


def included_hours_comparison(
    spans: Mapping[Any, tuple[Decimal, bool]],
    payments: Iterable[Money],
    *,
    with_hours: frozenset[Any],
    retainers: frozenset[Any],
    currency: str,
    end: datetime,
) -> dict[str, Any]:
    """Retainer clients with included hours against those without: how many, average lifetime
    in months (to leaving or to ``end``) and average revenue up to ``end``."""
    revenue: dict[Any, Decimal] = {}
    for p in payments:
        if p.currency == currency and p.at < end:
            revenue[p.lead_id] = revenue.get(p.lead_id, Decimal(0)) + p.amount

    def group(members: set[Any]) -> dict[str, Any]:
        known = [c for c in members if c in spans]
        return {
            "clients": len(known),
            "median_lifetime_months": median_survival(spans[c] for c in known),
            "average_lifetime_months": ratio(sum((spans[c][0] for c in known), Decimal(0)), len(known), _MONTH),
            "average_revenue": ratio(sum((revenue.get(c, Decimal(0)) for c in known), Decimal(0)), len(known), _MONTH),
        }

    with_group = group(set(retainers & with_hours))
    without_group = group(set(retainers - with_hours))
    # The medians when both are known (lifetimes still running count as staying); else the
    # averages so far, which understate whoever stays longer.
    measure = "median_lifetime_months"
    if with_group[measure] is None or without_group[measure] is None:
        measure = "average_lifetime_months"
    longer = None
    if with_group[measure] is not None and without_group[measure] is not None:
        longer = with_group[measure] - without_group[measure]
    return {"with_hours": with_group, "without_hours": without_group, "months_longer": longer, "measured_by": measure}


# A retainer client under the underuse share this many months running gets a nudge.
NUDGE_AFTER_MONTHS = 2


def underused_months(before: int, *, used: Decimal, included: Decimal | None, share: Decimal) -> int:
    """Months running a client used under ``share`` of their included hours, after one more
    month's report: one more when under, back to 0 when not (or nothing is included)."""
    if not included or used >= included * share:
        return 0
    return before + 1


# --------------------------------------------------------------------------- new against old


def new_against_old(data: FiguresInput, joined: Mapping[Any, datetime]) -> list[dict[str, Any]]:
    """Per month of the period: clients in their first six months against older ones, their
    average invoice and revenue per paying client."""
    first = data.start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = []
    k = 0
    while (month := add_months(first, k)) < data.end:
        after = add_months(first, k + 1)
        row: dict[str, Any] = {"month": f"{month:%Y-%m}"}
        for name, is_new in (("new", True), ("old", False)):

            def member(client: Any, month: datetime = month, is_new: bool = is_new) -> bool:
                since = joined.get(client)
                return (
                    since is not None
                    and since < add_months(month, 1)
                    and (since > add_months(month, -NEW_CLIENT_MONTHS)) == is_new
                )

            invoices = [
                i.amount
                for i in data.invoices
                if i.currency == data.currency and month <= i.at < after and member(i.lead_id)
            ]
            paid: dict[Any, Decimal] = {}
            for p in data.payments:
                if p.currency == data.currency and month <= p.at < after and member(p.lead_id):
                    paid[p.lead_id] = paid.get(p.lead_id, Decimal(0)) + p.amount
            row[name] = {
                "invoices": len(invoices),
                "average_invoice": ratio(sum(invoices, Decimal(0)), len(invoices), _MONTH),
                "paying_clients": len(paid),
                "revenue_per_client": ratio(sum(paid.values(), Decimal(0)), len(paid), _MONTH),
            }
        rows.append(row)
        k += 1
    return rows


# --------------------------------------------------------------------------- all of them


def figures(data: FiguresInput) -> dict[str, Any]:
    """Every figure above for the period, in its currency."""
    by_client = _by_client(data.movements)
    joined = {c: j for c, ms in by_client.items() if (j := _joined(ms)) is not None}
    paid = _paid(data.payments, data.currency)
    returns = channel_returns(data)
    overall = totals(returns)
    spans = lifetimes(by_client, end=data.end)
    life = lifetime_figures(spans)
    staying = frozenset(c for c, ms in by_client.items() if running_at(ms, data.end))
    yearly = yearly_revenue_retention(paid, joined, at=data.end, currency=data.currency, staying=staying)
    yearly["trend"] = retention_trend(paid, joined, start=data.start, end=data.end, currency=data.currency)
    reasons: dict[str, str] = {}
    if overall["roi"] is None:
        reasons["roi"] = f"no {data.currency} spend in the period"
    if yearly["ratio"] is None:
        reasons["yearly_revenue_retention"] = (
            f"nobody was a client a year before {data.end:%Y-%m-%d}"
            if not yearly["clients"]
            else "the clients of a year before paid nothing the year before that"
        )
    if life["median_lifetime_months"] is None:
        reasons["median_lifetime_months"] = (
            f"fewer than half of the clients have left ({life['clients_left']} of"
            f" {life['clients_left'] + life['clients_running']}): the median is still ahead"
        )
    return {
        "figure_reasons": reasons,
        "roi": overall["roi"],
        "first_year_revenue": overall["first_year_revenue"],
        "cost_per_lead": overall["cost_per_lead"],
        "cost_per_qualified_lead": overall["cost_per_qualified_lead"],
        "channels": returns,
        "yearly_revenue_retention": yearly,
        "median_lifetime_months": life["median_lifetime_months"],
        "lifetime": life,
        "leak": leak(by_client, data.signals, start=data.start, end=data.end),
        "included_hours": included_hours_comparison(
            spans,
            paid,
            with_hours=data.with_hours,
            retainers=data.retainer_clients,
            currency=data.currency,
            end=data.end,
        ),
        "new_against_old": new_against_old(data, joined),
    }

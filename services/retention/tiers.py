"""The tier review: every client classified by the tier rules (domain/tiers.py) once per period
on the business clock, a change published, and the clients to let go listed with the revenue
at stake.

The computed tier counts the notes' tags too (``mistreats_staff`` or ``blames_us`` twice in 90
days: ``fire``), and is kept on the client (``computed_tier``); a tier set by hand
(manual_tier.py) wins while in force, and the review lists it (``manual``) with its reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from services.retention import domain, manual_tier, notes, record
from services.retention.context import Context
from services.retention.domain.tiers import effective_tier, let_go_from_notes, with_notes
from services.retention.store import Client, ClientEvent, TierReview
from shared.db import StateRow
from shared.errors import NotFound
from shared.ids import time_ordered_id
from shared.money import quantize
from shared.uow import UnitOfWork, UnitOfWorkFactory

TIER_JOB = "retention.tiers"
PAGE = 200
_REVIEW_STATE = "retention.tier_review.period"


async def _tier_evidence(tx: UnitOfWork, client: Client) -> domain.TierEvidence:
    revenue = await record.revenue_of(tx, client.lead_id)
    main = max(revenue.values(), default=Decimal(0))
    leaked = sum(
        (
            Decimal(d.get("leaked") or 0)
            for d in await tx.session.scalars(
                select(ClientEvent.detail).where(
                    ClientEvent.lead_id == client.lead_id, ClientEvent.type == "deal.change_requested"
                )
            )
        ),
        Decimal(0),
    )
    return domain.TierEvidence(
        deals_won=client.deals_won,
        has_subscription=client.first_subscribed_at is not None,
        revenue=main,
        payments_on_time=client.payments_on_time,
        payments_late=client.payments_late,
        payments_failed=client.payments_failed,
        complaints=client.complaints,
        out_of_scope_requests=client.out_of_scope_requests,
        leaked=leaked,
        band=client.band,
        red_flags=client.red_flags or 0,
    )


@dataclass(frozen=True)
class _Classified:
    """What the tier review made of one client: its tier, a change and a let-go entry if any."""

    tier: str
    change: dict[str, object] | None
    let_go: dict[str, object] | None
    manual: dict[str, object] | None = None


async def _classify(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> _Classified:
    """Classify one client by the tier rules; a change is published (``client.tier_changed``)."""
    evidence = await _tier_evidence(tx, client)
    computed, computed_reasons = domain.classify_tier(evidence, ctx.settings.tiers)
    # Notes tagged mistreats_staff or blames_us, twice in 90 days: a let-go candidate.
    computed, computed_reasons = with_notes(
        computed, computed_reasons, let_go_from_notes(await notes.recent_tags(tx, client.lead_id, now), now)
    )
    client.computed_tier = computed
    # A tier set by hand wins while in force; the review keeps the computed one beside it.
    row = await manual_tier.manual_of(tx, client.lead_id)
    tier, reasons, by_hand = effective_tier(computed, computed_reasons, manual_tier.as_rule(row), now)
    manual: dict[str, object] | None = None
    if by_hand and row is not None:
        manual = {
            "lead_id": str(client.lead_id),
            "tier": row.tier,
            "reason": row.reason,
            "until": row.until.isoformat(),
            "set_by": row.set_by,
            "computed_tier": computed,
            "computed_reasons": computed_reasons,
        }
    change: dict[str, object] | None = None
    if tier != client.tier:
        change = {"lead_id": str(client.lead_id), "from_tier": client.tier, "to_tier": tier, "reasons": reasons}
    manual_tier.put_in_force(tx, client, tier=tier, reasons=reasons, computed=computed, by_hand=by_hand, now=now)
    let_go: dict[str, object] | None = None
    if tier == "fire":
        cur = client.mrr_currency
        let_go = {
            "lead_id": str(client.lead_id),
            "reasons": reasons,
            "mrr": [{"amount": format(client.mrr, "f"), "currency": cur}] if cur else [],
            "annual_revenue_at_stake": [{"amount": format(quantize(client.mrr * 12), "f"), "currency": cur}]
            if cur
            else [],
            "revenue_to_date": [
                {"amount": format(a, "f"), "currency": c}
                for c, a in (await record.revenue_of(tx, client.lead_id)).items()
            ],
            "subscription_status": client.subscription_status,
            "computed_tier": computed,
            "manual_tier": manual,
        }
    return _Classified(tier, change, let_go, manual)


def _summary(classified: Iterable[_Classified], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """A review's result (tier counts, changes, clients to let go), or ``into`` with more added."""
    counts = dict.fromkeys(domain.TIERS, 0) | dict((into or {}).get("tiers", {}))
    changes = list((into or {}).get("changes", []))
    let_go = list((into or {}).get("let_go", []))
    manual = list((into or {}).get("manual", []))
    for c in classified:
        counts[c.tier] = counts.get(c.tier, 0) + 1
        changes += [c.change] if c.change else []
        let_go += [c.let_go] if c.let_go else []
        manual += [c.manual] if c.manual else []
    return {"tiers": counts, "changes": changes, "let_go": let_go, "manual": manual}


async def review_tiers(
    uow: UnitOfWorkFactory, ctx: Context, now: datetime, *, force: bool = False
) -> TierReview | None:
    """The tier review: once per period (monthly by default) on the business clock, or now when
    ``force``d. Every client is classified by the tier rules (domain/tiers.py); a change is
    published (``client.tier_changed``); the review lists the clients to let go (``fire``) with
    their reasons and the revenue at stake. Returns the review, or None when none was due.

    A client the review fails on is kept aside with its reason (job ``retention.tiers``); the
    others are reviewed. It is tried again at the following polls once its backoff is over, and
    what it comes to is added to the period's review."""
    period = domain.review_period(now, ctx.settings.tiers.review_every)
    async with uow() as tx:
        last = await tx.session.get(StateRow, _REVIEW_STATE, with_for_update=True)
        reviewed = not force and last is not None and last.value == period
        if last is None:
            # A new store starts counting periods: its first review is at the next period's
            # start (clients that have just arrived have nothing to be reviewed on yet).
            tx.session.add(StateRow(name=_REVIEW_STATE, value=period))
            if not force:
                return None
        elif not reviewed:
            last.value = period
    if reviewed:
        await _review_failed_again(uow, ctx, now, period)
        return None

    async def classify(tx: UnitOfWork, client: Client) -> _Classified:
        return await _classify(tx, ctx, client, now=now)

    # A window of clients at a time (record.client_id_windows), each added to the summary in
    # key order as it is done: the same summary as one pass over every client.
    summary = _summary([])
    async for ids in record.client_id_windows(uow):
        result = await ctx.jobs(TIER_JOB).run(uow, ids, classify, now=now, load=record.lock_clients, chunk=PAGE)
        summary = _summary((result.done[i] for i in ids if i in result.done), into=summary)
    async with uow() as tx:
        review = TierReview(id=time_ordered_id(), period=period, at=now, result=summary)
        tx.session.add(review)
    await ctx.metrics.refresh()
    return review


async def _review_failed_again(uow: UnitOfWorkFactory, ctx: Context, now: datetime, period: str) -> None:
    """The clients this period's review failed on, whose backoff is over, reviewed again; what
    they come to joins the period's review."""
    job = ctx.jobs(TIER_JOB)
    async with uow.sessions() as session:
        failing = await job.failures(session)
    due: list[uuid.UUID] = []
    for key, failure in failing.items():
        try:
            due += [] if failure.waits(now) else [uuid.UUID(key)]
        except ValueError:
            continue
    if not due:
        return

    async def classify(tx: UnitOfWork, client: Client) -> _Classified:
        return await _classify(tx, ctx, client, now=now)

    result = await job.run(uow, due, classify, now=now, load=record.lock_clients)
    if not result.done:
        return
    async with uow() as tx:
        review = await tx.session.scalar(
            select(TierReview)
            .where(TierReview.period == period)
            .order_by(TierReview.at.desc())
            .limit(1)
            .with_for_update()
        )
        if review is not None:
            review.result = _summary(result.done.values(), into=review.result)
    await ctx.metrics.refresh()


async def latest_review(tx: UnitOfWork) -> TierReview:
    """The latest tier review, or ``NotFound`` before the first."""
    review = await tx.session.scalar(select(TierReview).order_by(TierReview.at.desc()).limit(1))
    if review is None:
        raise NotFound("no tier review has run yet: it runs monthly, or POST /reviews to run one now")
    return review


async def replay_tier(
    tx: UnitOfWork, lead_id: uuid.UUID, *, to_tier: str, reasons: list[str], computed_tier: str | None = None
) -> None:
    """Rebuild: the tier a review gave, or a manual tier put in force (its event is the record of it)."""
    client = await record.client(tx, lead_id)
    client.tier, client.tier_reasons, client.tier_changed_at = to_tier, reasons, record.when(tx)
    if computed_tier is not None:
        client.computed_tier = computed_tier

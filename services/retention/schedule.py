"""What moves with time, not with events: the scheduled health review (fees whose change took
effect, loyalty points whose refund window passed, then every client's health and churn risk
again: tenure and windows move with time)."""

from __future__ import annotations

from datetime import datetime

from services.retention import loyalty, record, subscriptions
from services.retention.assessment import assess
from services.retention.context import Context
from services.retention.store import Client
from shared.uow import UnitOfWork, UnitOfWorkFactory

HEALTH_JOB = "retention.health"
PAGE = 200


async def review_health(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: fees whose change took effect, loyalty points whose refund window passed,
    and every client's health and churn risk again, a page of clients a transaction. A client
    the review fails on is kept aside with its reason and backoff (job ``retention.health``);
    the others are reviewed. Returns how many clients changed band."""
    await subscriptions.apply_due_price_changes(uow, ctx, now)
    await loyalty.award_due_points(uow, ctx, now)

    async def reassess(tx: UnitOfWork, client: Client) -> bool:
        return await assess(tx, ctx, client, now=now)

    changed = 0
    async for ids in record.client_id_windows(uow):
        result = await ctx.jobs(HEALTH_JOB).run(uow, ids, reassess, now=now, load=record.lock_clients, chunk=PAGE)
        changed += sum(result.done.values())
    await ctx.metrics.refresh()
    return changed

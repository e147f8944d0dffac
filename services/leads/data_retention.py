"""Retention of data: people the agency will not work with are not kept forever.

A lead disqualified longer than ``LEADS_DISQUALIFIED_RETENTION_DAYS`` ago, and one whose every
deal was lost longer than ``LEADS_LOST_RETENTION_DAYS`` ago without ever becoming a client, is
erased by a scheduled job on the business clock, through the erasure use case itself
(``privacy.erase_lead``): ``lead.erased`` reaches the other services exactly as after
``DELETE /leads/{lead_id}``, and the anonymous counts stay.

When the time starts, from what the store records:

- disqualified: the last move into ``disqualified`` in the stage history (the lead's last
  change, for a lead from before the history);
- lost: the last ``deal.lost`` in the timeline (the newest deal's creation, failing that);
- either way, a later touch (the person wrote again, or a colleague matched to them) starts
  it again: someone who is still in touch is not erased for an old verdict.

A client (a won deal, or a lead that ever reached ``action``, ``retention``, ``advocacy`` or
``churned``) is never erased by this job, nor is a lead with a proposal still open. Each lead
is erased in its own transaction: one that fails is logged, counted and tried again later
(``shared.jobs``), the others go on.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ScalarSelect, Select, func, select

from services.leads import privacy
from services.leads.context import Context
from services.leads.store import Activity, Deal, Lead, StageChange, Touch
from shared.access.audit import AuditLog
from shared.access.authn import wall_now
from shared.access.context import system_actor
from shared.metrics import PlumbingMetrics
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

JOB = "leads.data-retention"
DISQUALIFIED = "disqualified"
LOST = "lost"
# Stages only a client reaches: whoever was in one of them is never erased for retention.
CLIENT_STAGES = ("action", "retention", "advocacy", "churned")


@dataclass(frozen=True)
class Expired:
    """A lead whose retention is over: why (``disqualified`` or ``lost``) and since when it counted."""

    lead_id: uuid.UUID
    what: str
    since: datetime


def _last_touch() -> ScalarSelect[datetime]:
    return select(func.max(Touch.at)).where(Touch.lead_id == Lead.id).scalar_subquery()


def _never_a_client() -> tuple[ColumnElement[bool], ...]:
    """Live, never a client, nothing still proposed."""
    won_or_open = select(Deal.lead_id).where(Deal.status.in_(("won", "proposed")))
    was_client = select(StageChange.lead_id).where(StageChange.to_stage.in_(CLIENT_STAGES))
    return (
        Lead.erased_at.is_(None),
        Lead.merged_into.is_(None),
        Lead.stage.not_in(CLIENT_STAGES),
        Lead.id.not_in(won_or_open),  # a client, or a proposal still open: still in play
        Lead.id.not_in(was_client),
    )


def _disqualified(cutoff: datetime) -> Select[uuid.UUID, datetime]:
    moved = (
        select(func.max(StageChange.at))
        .where(StageChange.lead_id == Lead.id, StageChange.to_stage == DISQUALIFIED)
        .scalar_subquery()
    )
    since = func.coalesce(moved, Lead.updated_at)
    touched = _last_touch()
    return select(Lead.id, since).where(
        Lead.stage == DISQUALIFIED,
        *_never_a_client(),
        since < cutoff,
        (touched.is_(None)) | (touched < cutoff),
    )


def _lost(cutoff: datetime) -> Select[uuid.UUID, datetime]:
    lost_at = (
        select(func.max(Activity.at)).where(Activity.lead_id == Lead.id, Activity.type == "deal.lost").scalar_subquery()
    )
    newest_deal = select(func.max(Deal.created_at)).where(Deal.lead_id == Lead.id).scalar_subquery()
    since = func.coalesce(lost_at, newest_deal)
    touched = _last_touch()
    return select(Lead.id, since).where(
        Lead.stage != DISQUALIFIED,  # the disqualified have their own setting
        Lead.id.in_(select(Deal.lead_id).where(Deal.status == "lost")),
        Lead.id.not_in(select(Deal.lead_id).where(Deal.status != "lost")),
        *_never_a_client(),
        since < cutoff,
        (touched.is_(None)) | (touched < cutoff),
    )


def expose(metrics: PlumbingMetrics) -> None:
    """The job's series at 0 from the start, so rules and dashboards find them."""
    for what in (DISQUALIFIED, LOST):
        metrics.data_retention_erased.labels(metrics.service, what)
        metrics.data_retention_errors.labels(metrics.service, what)


async def expired(
    tx: UnitOfWork, ctx: Context, *, now: datetime, only: list[uuid.UUID] | None = None
) -> dict[uuid.UUID, Expired]:
    """The leads whose retention is over at ``now`` (among ``only`` when given), oldest first."""
    settings = ctx.settings
    found: dict[uuid.UUID, Expired] = {}
    for what, query in (
        (DISQUALIFIED, _disqualified(now - timedelta(days=settings.disqualified_retention_days))),
        (LOST, _lost(now - timedelta(days=settings.lost_retention_days))),
    ):
        if only is not None:
            query = query.where(Lead.id.in_(only))
        for lead_id, since in (await tx.session.execute(query.order_by(Lead.created_at, Lead.id))).all():
            found.setdefault(lead_id, Expired(lead_id, what, since))
    return found


async def erase_expired(
    uow: UnitOfWorkFactory,
    ctx: Context,
    now: datetime,
    *,
    metrics: PlumbingMetrics | None = None,
    audit: AuditLog | None = None,
) -> Counter[str]:
    """Erase every lead whose retention is over, each in its own transaction, as the system;
    returns how many were erased for each reason. Each erasure is counted and audited after its
    commit; the failures (``shared.jobs`` keeps them and tries again) at the end of the pass."""
    async with uow() as tx:
        candidates = await expired(tx, ctx, now=now)
    if not candidates:
        return Counter()

    async def load(tx: UnitOfWork, keys: list[uuid.UUID]) -> dict[uuid.UUID, Expired]:
        # Again in the erasing transaction: a deal proposed meanwhile, or a new touch, keeps them.
        return await expired(tx, ctx, now=now, only=keys)

    request_id = uuid.uuid4().hex  # one per pass, so a pass's rows are read together
    actor = system_actor(ctx.settings.service_name)

    def done(item: Expired) -> None:
        if metrics is not None:
            metrics.data_retention_erased.labels(metrics.service, item.what).inc()
        if audit is not None:
            action = f"data retention: erase {item.what}"
            # Stamped on the real clock, as every audit row is (access is security, not business).
            audit.record(
                at=wall_now(), actor=actor, action=action, lead_id=item.lead_id, request_id=request_id, status=200
            )

    async def erase(tx: UnitOfWork, item: Expired) -> str:
        await privacy.erase_lead(tx, ctx, item.lead_id)
        tx.after_commit(lambda: done(item))
        return item.what

    result = await ctx.jobs(JOB).run(uow, list(candidates), erase, now=now, load=load, together=False)
    erased = Counter(result.done.values())
    failed = Counter(candidates[key].what for key in result.failed)
    if metrics is not None:
        for what, count in failed.items():
            metrics.data_retention_errors.labels(metrics.service, what).inc(count)
    if erased or failed:
        log.info(
            "data retention: erased %s; failed on %s; %d waiting to be tried again",
            dict(erased) or "none",
            dict(failed) or "none",
            len(result.waiting),
        )
    return erased

"""Terminations: the agency ends a relationship itself (docs/design.md, "Ending a relationship
on the agency's side"), with notice; not a cancellation, and not churn.

``terminate_client`` records it and announces ``client.terminated`` (billing ends every running
subscription at ``effective_at`` and issues a final invoice, nurture sends the offboarding
notice, leads marks the person and their company). It is ``ended`` from ``effective_at`` on:
the scheduled review marks it (``end_due``), and so does billing's ``subscription.cancelled``
with reason ``terminated:<reason>`` (``subscriptions.cancel_subscription``); what the answers
show is computed from ``effective_at`` and now, so a replay shows the same.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from services.retention import domain, record
from services.retention.context import Context
from services.retention.store import Client, Subscription, Termination
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork, UnitOfWorkFactory

END_JOB = "retention.terminations"


def status_of(termination: Termination, now: datetime) -> str:
    """``notice`` until ``effective_at``, then ``ended`` (whether or not a pass marked it yet)."""
    if termination.status == "ended":
        return "ended"
    return domain.termination_status(termination.effective_at, now)


async def termination_of(tx: UnitOfWork, lead_id: uuid.UUID) -> Termination | None:
    """The client's termination, if the agency ended the relationship."""
    return await tx.session.scalar(
        select(Termination).where(Termination.lead_id == lead_id).order_by(Termination.created_at.desc()).limit(1)
    )


async def terminate_client(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    reason: str,
    notice_days: int | None,
    comment: str | None,
) -> Termination:
    """The agency ends the relationship with ``notice_days`` of notice (the setting's default
    when none is given): recorded and announced (``client.terminated``) with the subscriptions
    still running, which billing ends at ``effective_at``. Refused (409) for a client already
    terminated or with no relationship left (never a client, erased, every subscription ended)."""
    if reason not in domain.TERMINATION_REASONS:
        raise Invalid(f"reason: {reason!r} is not one of {', '.join(domain.TERMINATION_REASONS)}")
    days = ctx.settings.termination_notice_days if notice_days is None else notice_days
    client = await tx.session.get(Client, lead_id, with_for_update=True)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    now = tx.now()
    earlier = await termination_of(tx, lead_id)
    if earlier is not None:
        state = status_of(earlier, now)
        raise Conflict(
            f"client {lead_id} is already terminated (status {state}, effective_at {earlier.effective_at.isoformat()})"
        )
    if client.erased_at is not None:
        raise Conflict(f"client {lead_id} was erased: no relationship left to end")
    if client.became_client_at is None:
        raise Conflict(f"lead {lead_id} never became a client (no deposit cleared): no relationship to end")
    running = list(
        await tx.session.scalars(
            select(Subscription.id)
            .where(Subscription.lead_id == lead_id, Subscription.status.in_(domain.RUNNING))
            .order_by(Subscription.started_at.nulls_last(), Subscription.id)
        )
    )
    if not running and client.subscription_status == "cancelled":
        raise Conflict(f"client {lead_id} has no relationship left (subscription status: {client.subscription_status})")
    try:
        effective = domain.termination_effective_at(now, days)
    except ValueError as exc:
        raise Invalid(f"notice_days: {exc}") from None
    termination = Termination(
        id=time_ordered_id(),
        lead_id=lead_id,
        reason=reason,
        comment=comment,
        notice_days=days,
        effective_at=effective,
        status=domain.termination_status(effective, now),
        subscription_ids=[str(s) for s in running],
        created_at=now,
        ended_at=effective if effective <= now else None,
    )
    tx.session.add(termination)
    record.timeline(tx, client, "client.terminated", reason=reason, notice_days=days, effective_at=effective)
    tx.emit(
        "client.terminated",
        ev.ClientTerminated(
            termination_id=termination.id,
            reason=reason,  # checked above
            comment=comment,
            notice_days=days,
            effective_at=effective,
            subscription_ids=running,
        ),
        lead_id=lead_id,
    )
    return termination


async def mark_ended(tx: UnitOfWork, lead_id: uuid.UUID, *, at: datetime) -> None:
    """The client's termination is over (billing ended its last subscription, or its date
    came): ``ended`` as of its ``effective_at``."""
    termination = await termination_of(tx, lead_id)
    if termination is not None and termination.status != "ended" and termination.effective_at <= at:
        termination.status = "ended"
        termination.ended_at = termination.effective_at


async def end_due(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: every termination whose notice has run out is ``ended`` (a project client has
    no subscription whose end would tell). Returns how many ended."""
    async with uow() as tx:
        due = list(
            await tx.session.scalars(
                select(Termination.id).where(Termination.status == "notice", Termination.effective_at <= now)
            )
        )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Termination]:
        rows = await tx.session.scalars(select(Termination).where(Termination.id.in_(ids)).with_for_update())
        return {t.id: t for t in rows}

    async def end(tx: UnitOfWork, termination: Termination) -> None:
        if termination.status != "ended":
            termination.status = "ended"
            termination.ended_at = termination.effective_at

    done = await ctx.jobs(END_JOB).run(uow, due, end, now=now, load=load)
    return len(done.done)


async def erase_comment(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """An erased person: a termination's free text may name people, so it goes (the facts stay)."""
    for row in await tx.session.scalars(select(Termination).where(Termination.lead_id == lead_id)):
        row.comment = None


async def replay_termination(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.ClientTerminated) -> None:
    """Rebuild: the termination as it was decided (its event is the record of it)."""
    client = await record.client(tx, lead_id)
    if await tx.session.get(Termination, p.termination_id) is not None:
        return
    now = record.when(tx)
    tx.session.add(
        Termination(
            id=p.termination_id,
            lead_id=lead_id,
            reason=p.reason,
            comment=p.comment,
            notice_days=p.notice_days,
            effective_at=p.effective_at,
            status=domain.termination_status(p.effective_at, now),
            subscription_ids=[str(s) for s in p.subscription_ids],
            created_at=now,
            ended_at=p.effective_at if p.effective_at <= now else None,
        )
    )
    record.timeline(
        tx, client, "client.terminated", reason=p.reason, notice_days=p.notice_days, effective_at=p.effective_at
    )

"""Inbound replies: an e-mail belongs to a person only through its thread (or a person's word);
a person's reply ends the sequences that exit on a reply, starts a human takeover by itself and,
from a high-value person, becomes a task."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from services.nurture import domain
from services.nurture.catalog import current_catalog
from services.nurture.enrollment import end_enrollments
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import get_contact
from services.nurture.store import Message, Reply, Task
from services.nurture.takeover import active_takeover, start_takeover
from services.nurture.tasks import raise_task
from services.nurture.tracking import engage
from shared.errors import Conflict, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork


@dataclass(frozen=True)
class ReplyOutcome:
    """A reply as recorded, whether it started a takeover, and the task it made, if any."""

    reply: Reply
    takeover_started: bool
    task: Task | None


async def record_reply(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID | None,
    thread: list[uuid.UUID],
    from_address: str | None,
    subject: str | None,
    text: str | None,
    builtin: domain.Catalog,
    engagement: domain.EngagementPolicy,
    task_policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
    reply_days: int = domain.REPLY_DAYS,
) -> ReplyOutcome:
    """An inbound email. It belongs to a person only when its thread names a message we sent
    to them (or a person said whose it is: ``lead_id`` from a token); a From address alone
    proves nothing. Unmatched, it is kept for a person to look at, and changes nothing else."""
    message = None
    for message_id in thread:
        message = await tx.session.get(Message, message_id)
        if message is not None:
            break
    matched_by = "person" if lead_id is not None else ("thread" if message is not None else None)
    lead_id = lead_id or (message.lead_id if message else None)
    reply = Reply(
        id=time_ordered_id(),
        lead_id=None,
        matched_by=None,
        message_id=message.message_id if message else None,
        from_address=from_address,
        subject=subject,
        text=text,
        received_at=tx.now(),
    )
    tx.session.add(reply)
    tx.after_commit(lambda: metrics.replies.inc())
    if lead_id is None:
        return ReplyOutcome(reply, False, None)
    return await _reply_from(
        tx,
        reply,
        lead_id=lead_id,
        matched_by=matched_by or "person",
        message=message,
        builtin=builtin,
        engagement=engagement,
        task_policy=task_policy,
        metrics=metrics,
        reply_days=reply_days,
    )


async def match_reply(
    tx: UnitOfWork,
    *,
    reply_id: uuid.UUID,
    lead_id: uuid.UUID,
    builtin: domain.Catalog,
    engagement: domain.EngagementPolicy,
    task_policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
    reply_days: int = domain.REPLY_DAYS,
) -> ReplyOutcome:
    """A person says whose an unmatched e-mail is: it becomes that person's reply (404 for no
    such reply, 409 when it is already someone else's)."""
    reply = await tx.session.get(Reply, reply_id)
    if reply is None:
        raise NotFound(f"no reply {reply_id}")
    if reply.lead_id is not None:
        if reply.lead_id == lead_id:
            return ReplyOutcome(reply, False, None)
        raise Conflict(f"reply {reply_id} is already matched to {reply.lead_id}")
    return await _reply_from(
        tx,
        reply,
        lead_id=lead_id,
        matched_by="person",
        message=None,
        builtin=builtin,
        engagement=engagement,
        task_policy=task_policy,
        metrics=metrics,
        reply_days=reply_days,
    )


async def _reply_from(
    tx: UnitOfWork,
    reply: Reply,
    *,
    lead_id: uuid.UUID,
    matched_by: str,
    message: Message | None,
    builtin: domain.Catalog,
    engagement: domain.EngagementPolicy,
    task_policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
    reply_days: int = domain.REPLY_DAYS,
) -> ReplyOutcome:
    """What a person's reply does: sequences that exit on a reply end, a human takeover starts
    by itself (a person who writes gets a person; it ends by itself after ``reply_days``
    business days unless extended), and a high-value person's reply is a task
    for the lead's owner (``domain.task_owner``)."""
    contact = await get_contact(tx, lead_id)
    now = tx.now()
    reply.lead_id, reply.matched_by = lead_id, matched_by
    if message is not None:
        message.replied_at = message.replied_at or now
    engage(tx, contact, "reply", policy=engagement)
    await end_enrollments(tx, catalog=await current_catalog(tx, builtin), lead_id=lead_id, event_type=domain.REPLY)
    started = False
    if await active_takeover(tx, lead_id) is None:
        await start_takeover(
            tx,
            lead_id=lead_id,
            by="inbound-reply",
            reason="the person replied",
            builtin=builtin,
            kind=domain.BY_REPLY,
            reply_days=reply_days,
        )
        started = True
    task = None
    if domain.is_high_value(tier=contact.tier, segment=contact.segment, sales_ready=contact.sales_ready_at is not None):
        task = await raise_task(
            tx,
            contact=contact,
            kind="reply",
            source=f"reply:{reply.id}",
            title=f"Answer {contact.name or 'a high-value contact'} personally today",
            detail=(reply.subject or "")[:300] or None,
            policy=task_policy,
            metrics=metrics,
        )
    return ReplyOutcome(reply, started, task)


async def list_replies(tx: UnitOfWork, *, status: str, lead_id: uuid.UUID | None, limit: int) -> list[Reply]:
    """Inbound e-mails, newest first: ``unmatched`` (for a person to look at), ``matched`` or
    ``all``, of everyone or of one person."""
    query = select(Reply).order_by(Reply.received_at.desc(), Reply.id).limit(limit)
    if status == "unmatched":
        query = query.where(Reply.lead_id.is_(None))
    elif status == "matched":
        query = query.where(Reply.lead_id.is_not(None))
    if lead_id is not None:
        query = query.where(Reply.lead_id == lead_id)
    return list(await tx.session.scalars(query))

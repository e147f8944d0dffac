"""Tracking: what people do with the emails (opens, clicks, unsubscribes, bounces) and their
survey answers, each published on ``engagement`` and adding to the one engagement score."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update

from services.nurture import domain
from services.nurture.catalog import current_catalog
from services.nurture.enrollment import end_each, end_enrollments, finish_if_done
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import active_enrollments, get_contact
from services.nurture.sending import Outgoing, close_step
from services.nurture.store import Contact, Feedback, Message, ScheduledMessage
from services.nurture.tasks import raise_task
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

S = ScheduledMessage


def engage(tx: UnitOfWork, contact: Contact, kind: str, *, policy: domain.EngagementPolicy) -> None:
    """One more signal from the person (``open``, ``click``, ``reply``, ``feedback``): their
    engagement score moves, and ``lead.sales_ready`` is published the first time it is enough."""
    now = tx.now()
    engaged = domain.engage(
        contact.engagement_score or 0,
        contact.engaged_at,
        now=now,
        kind=kind,
        sales_ready=contact.sales_ready_at is not None,
        policy=policy,
    )
    contact.engagement_score = engaged.score
    contact.engaged_at = now
    if engaged.sales_ready_reason is not None:
        contact.sales_ready_at = now
        tx.emit(
            "lead.sales_ready",
            ev.LeadSalesReady(engagement_score=engaged.score, reason=engaged.sales_ready_reason),
            lead_id=contact.lead_id,
        )


@dataclass(frozen=True)
class Tracked:
    """What a tracking hit touched: the email's sequence and step (``""`` and -1 when none),
    and whether it was the first such hit."""

    sequence: str
    step: int
    first: bool

    @property
    def step_label(self) -> str:
        return str(self.step) if self.step >= 0 else ""


async def record_open(
    tx: UnitOfWork, message_id: uuid.UUID, *, engagement: domain.EngagementPolicy, metrics: NurtureMetrics
) -> Tracked | None:
    """The open pixel loaded: the first open is recorded and published (``email.opened``).
    None when no such message was sent."""
    message = await tx.session.get(Message, message_id)
    if message is None:
        return None
    first = message.opened_at is None
    tracked = Tracked(message.sequence, message.step, first)
    if first:
        message.opened_at = tx.now()
        tx.emit("email.opened", ev.EmailOpened(message_id=message_id), lead_id=message.lead_id)
        # The event carries no sequence or step: counted here, where they are known.
        tx.after_commit(lambda: metrics.opened.labels(tracked.sequence, str(tracked.step)).inc())
        contact = await tx.session.get(Contact, message.lead_id)
        if contact is not None and contact.erased_at is None:
            engage(tx, contact, "open", policy=engagement)
    return tracked


async def record_click(
    tx: UnitOfWork, message_id: uuid.UUID, *, url: str, engagement: domain.EngagementPolicy, metrics: NurtureMetrics
) -> Tracked | None:
    """A tracked link was followed (``email.clicked``); a click implies the email was opened.
    None when no such message was sent."""
    message = await tx.session.get(Message, message_id)
    if message is None:
        return None
    now = tx.now()
    first = message.clicked_at is None
    tracked = Tracked(message.sequence, message.step, first)
    message.opened_at = message.opened_at or now
    message.clicked_at = message.clicked_at or now
    tx.emit("email.clicked", ev.EmailClicked(message_id=message_id, url=url), lead_id=message.lead_id)
    tx.after_commit(lambda: metrics.clicked.labels(tracked.sequence, str(tracked.step)).inc())
    if first:
        contact = await tx.session.get(Contact, message.lead_id)
        if contact is not None and contact.erased_at is None:
            engage(tx, contact, "click", policy=engagement)
    return tracked


async def unsubscribe(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    message_id: uuid.UUID | None,
    builtin: domain.Catalog,
    metrics: NurtureMetrics,
) -> Tracked | None:
    """The person asked for no more marketing email: consent is withdrawn, every marketing
    sequence ends, ``lead.unsubscribed`` is published once (a second click changes nothing).
    Transactional email (invoices, payments) still goes. None for a person nurture does not know."""
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        return None
    message = await tx.session.get(Message, message_id) if message_id else None
    if message is not None and message.lead_id != lead_id:
        message = None
    first = domain.unsubscribe_takes_effect(
        unsubscribed=contact.unsubscribed_at is not None, consent_marketing=contact.consent_marketing
    )
    tracked = Tracked(message.sequence if message else "", message.step if message else -1, first)
    if first:
        now = tx.now()
        contact.consent_marketing = False
        contact.unsubscribed_at = now
        contact.updated_at = now
        tx.emit(
            "lead.unsubscribed",
            ev.LeadUnsubscribed(channel="email", message_id=message.message_id if message else None),
            lead_id=lead_id,
        )
        tx.after_commit(lambda: metrics.unsubscribed.labels(tracked.sequence, tracked.step_label).inc())
        catalog = await current_catalog(tx, builtin)
        ending = [
            e
            for e in await active_enrollments(tx, lead_id)
            if domain.ended_by_unsubscribe(catalog.sequences.get(e.sequence))
        ]
        await end_each(tx, ending, reason="lead.unsubscribed")
        await tx.session.execute(
            update(S)
            .where(S.lead_id == lead_id, S.status == domain.PENDING, S.category == "marketing")
            .values(status=domain.CANCELLED, reason="lead.unsubscribed", claimed_until=None)
        )
    return tracked


async def record_bounce(
    tx: UnitOfWork,
    *,
    message_id: uuid.UUID | None,
    address: str | None,
    hard: bool,
    reason: str | None,
    builtin: domain.Catalog,
    metrics: NurtureMetrics,
) -> Tracked:
    """A bounce report (``email.bounced``): a hard bounce stops all email to that address;
    sequences with ``bounce`` among their exits end (404 when neither the message nor the
    address is known)."""
    message = await tx.session.get(Message, message_id) if message_id else None
    lead_id = message.lead_id if message else None
    if lead_id is None and address:
        lead_id = await tx.session.scalar(select(Contact.lead_id).where(Contact.email == address).limit(1))
    if lead_id is None:
        raise NotFound("no message or person matches this bounce")
    now = tx.now()
    if message is not None:
        message.bounced_at = message.bounced_at or now
    contact = await tx.session.get(Contact, lead_id)
    if hard and contact is not None:
        contact.bounced_at = contact.bounced_at or now
    tx.emit(
        "email.bounced",
        ev.EmailBounced(message_id=message.message_id if message else None, hard=hard, reason=reason),
        lead_id=lead_id,
    )
    tracked = Tracked(message.sequence if message else "", message.step if message else -1, True)
    tx.after_commit(lambda: metrics.bounced.labels(tracked.sequence, tracked.step_label).inc())
    catalog = await current_catalog(tx, builtin)
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type="email.bounced")
    return tracked


async def record_send_bounce(
    tx: UnitOfWork, step: Outgoing, *, reason: str, catalog: domain.Catalog, metrics: NurtureMetrics
) -> bool:
    """The SMTP server refused the address of a step being sent, for good (``email.bounced``):
    the step closes as bounced, no retry; sequences with ``bounce`` among their exits end.
    Whether the step was still pending (nothing is recorded otherwise)."""
    closed = await close_step(
        tx, step.id, status=domain.SUPPRESSED, reason="bounced", claimed_until=None, last_error=reason[:2000]
    )
    if not closed:
        return False
    contact = await tx.session.get(Contact, step.lead_id)
    if contact is not None:
        contact.bounced_at = contact.bounced_at or tx.now()
    tx.emit("email.bounced", ev.EmailBounced(message_id=step.id, hard=True, reason=reason[:500]), lead_id=step.lead_id)
    # email.bounced carries no sequence or step: counted here, where they are known.
    tx.after_commit(lambda: metrics.bounced.labels(step.sequence, str(step.step)).inc())
    await end_enrollments(tx, catalog=catalog, lead_id=step.lead_id, event_type="email.bounced")
    await finish_if_done(tx, lead_id=step.lead_id, enrollment_id=step.enrollment_id)
    return True


# --------------------------------------------------------------------------- surveys


@dataclass(frozen=True)
class Survey:
    """The survey a survey email asks: whose answer it takes, and which email asked."""

    lead_id: uuid.UUID
    survey: str
    message_id: uuid.UUID


async def survey_of(tx: UnitOfWork, message_id: uuid.UUID) -> Survey:
    """The survey the email ``message_id`` asks (its sequence names it; 404 when no such email)."""
    message = await tx.session.get(Message, message_id)
    if message is None:
        raise NotFound("no such survey")
    return Survey(message.lead_id, message.sequence, message.message_id)


async def record_feedback(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    survey: str,
    score: int | None,
    comment: str | None,
    message_id: uuid.UUID | None,
    engagement: domain.EngagementPolicy,
    task_policy: domain.TaskPolicy,
    metrics: NurtureMetrics,
) -> tuple[Feedback, bool]:
    """An answer to a one-question survey (``feedback.received``), once per person and survey:
    a later answer replaces the earlier one (``replaces``), and the same answer again changes
    nothing. A complaint is flagged and counted, stored and published like any other answer,
    and a person is asked to follow up (once per person and survey: the account owner, else the
    lead's owner). An answer needs a score or
    a comment (422). Returns the answer and whether it replaced an earlier one."""
    if not domain.is_answer(score, comment):
        raise Invalid("an answer needs a score (0-10) or a comment")
    contact = await get_contact(tx, lead_id)
    complaint = domain.is_complaint(score, comment)
    feedback = await feedback_of(tx, lead_id=lead_id, survey=survey)
    replaced = feedback is not None
    if feedback is None:
        feedback = Feedback(
            id=time_ordered_id(),
            lead_id=lead_id,
            survey=survey,
            score=score,
            comment=comment,
            complaint=complaint,
            message_id=message_id,
            received_at=tx.now(),
        )
        tx.session.add(feedback)
    elif (feedback.score, feedback.comment) == (score, comment):
        return feedback, True
    was_complaint = replaced and feedback.complaint
    if replaced:
        feedback.score, feedback.comment, feedback.complaint = score, comment, complaint
        feedback.message_id, feedback.received_at = message_id or feedback.message_id, tx.now()
    tx.emit(
        "feedback.received",
        ev.FeedbackReceived(
            survey=survey,
            score=score,
            comment=comment,
            complaint=domain.raises_complaint(complaint, replaces_complaint=was_complaint),
            replaces=replaced,
        ),
        lead_id=lead_id,
    )
    if contact.erased_at is None and not replaced:
        engage(tx, contact, "feedback", policy=engagement)
    if complaint:
        await raise_task(
            tx,
            contact=contact,
            kind="complaint",
            source=f"feedback:{lead_id}:{survey}",
            title="Complaint: call back and thank them for telling us",
            detail=f"{survey}: score {score if score is not None else '-'}; {comment or ''}".strip()[:2000],
            policy=task_policy,
            metrics=metrics,
        )
    return feedback, replaced


async def feedback_of(tx: UnitOfWork, *, lead_id: uuid.UUID, survey: str) -> Feedback | None:
    """The person's answer to ``survey``, if any."""
    return await tx.session.scalar(
        select(Feedback)
        .where(Feedback.lead_id == lead_id, Feedback.survey == survey)
        .order_by(Feedback.received_at)
        .limit(1)
    )

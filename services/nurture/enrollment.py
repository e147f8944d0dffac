"""Enrollment: whatever happens to a person keeps what nurture knows of them, ends the
enrollments the event is an exit of, and enrolls them in the sequences it starts; an
enrollment completes when no step is left, and its ``then`` sequence starts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import select, update

from services.nurture import domain, tasks
from services.nurture.catalog import current_catalog
from services.nurture.domain import consent as consent_rules
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import (
    active_enrollments,
    add_steps,
    chunks,
    contact_for_event,
    enrollments_of,
    known_contact,
)
from services.nurture.store import Contact, Enrollment, ScheduledMessage
from shared import events as ev
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork

S = ScheduledMessage


def profile(contact: Contact) -> dict[str, Any]:
    """The person as segment conditions read them."""
    return domain.profile_of(
        stage=contact.stage,
        tier=contact.tier,
        industry=contact.industry,
        language=contact.language,
        channel=contact.channel,
        segment=contact.segment,
    )


def _update_profile(contact: Contact, payload: Any, now: datetime) -> None:
    if isinstance(payload, ev.LeadCaptured):
        first = contact.email is None and contact.erased_at is None
        if first:
            contact.name, contact.email = payload.name, payload.email
            contact.language, contact.timezone, contact.segment = payload.language, payload.timezone, payload.segment
            contact.industry, contact.channel = payload.industry, payload.channel
            contact.stage = payload.stage
            contact.owner_id = payload.owner_id or contact.owner_id
        # After an unsubscribe or a bounce a ticked box is only a request: the person confirms
        # it through the link consent.py e-mails them (double opt-in).
        contact.consent_marketing = consent_rules.merged_consent(
            current=contact.consent_marketing,
            incoming=payload.consent_marketing,
            withdrawn=contact.unsubscribed_at is not None or contact.bounced_at is not None,
        )
    elif isinstance(payload, ev.LeadStageChanged):
        contact.stage = payload.to_stage
    elif isinstance(payload, ev.ClientTierChanged):
        contact.tier = payload.to_tier
    elif isinstance(payload, ev.DealWon) and payload.tier:
        contact.tier = payload.tier
    elif isinstance(payload, ev.LeadAssigned):
        if payload.role == "account":
            contact.account_owner_id = payload.owner_id
        else:
            contact.owner_id = payload.owner_id
    else:
        return
    contact.updated_at = now


async def on_event(
    tx: UnitOfWork,
    *,
    builtin: domain.Catalog,
    event: ev.Envelope,
    payload: Any,
    metrics: NurtureMetrics,
    task_policy: domain.TaskPolicy,
    on_scheduled: Callable[[], None] | None = None,
) -> list[uuid.UUID]:
    """Whatever happened to a person: keep what nurture knows of them (their profile, their
    owner and account owner), end the enrollments the event is an exit of, and enroll them in
    the sequences it starts for their segment; a churn risk, a block by dunning or a move to tier
    fire is also a task for a human (``tasks.on_client_event``). ``on_scheduled`` runs once the
    steps it scheduled committed (the sender wakes). An erasure is ``erasure.erase_person``."""
    lead_id = event.lead_id
    if lead_id is None:
        return []
    now = tx.now()
    existing = await known_contact(tx, lead_id)
    if existing is not None and existing.erased_at is not None:
        return []  # an erased person stays erased
    contact = await contact_for_event(tx, lead_id)
    _update_profile(contact, payload, now)
    catalog = await current_catalog(tx, builtin)
    data = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else {}
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type=event.type, data=data)
    await tasks.on_client_event(tx, contact=contact, event=event, payload=payload, policy=task_policy, metrics=metrics)
    if isinstance(payload, ev.LeadCaptured) and payload.duplicate:
        return []
    scheduled: list[uuid.UUID] = []
    for sequence in catalog.triggered_by(event.type, profile=profile(contact), data=data):
        scheduled += await enroll(tx, sequence=sequence, lead_id=lead_id, at=now, data=data)
    if scheduled and on_scheduled is not None:
        tx.after_commit(on_scheduled)
    return scheduled


async def enroll(
    tx: UnitOfWork,
    *,
    sequence: domain.Sequence,
    lead_id: uuid.UUID,
    at: datetime,
    data: Mapping[str, Any] | None = None,
) -> list[uuid.UUID]:
    """Enroll a person in a sequence when its re-entry rule allows, and schedule its steps, every
    step a durable row in this same transaction (``record.add_steps``). Returns the ids of the
    steps left to send."""
    data = dict(data or {})
    key = sequence.key_for(data, now=at)
    enrollments = await enrollments_of(tx, lead_id)
    past = [
        domain.PastEnrollment(key=e.key, active=e.status == "active", ended_at=e.ended_at)
        for e in enrollments
        if e.sequence == sequence.name
    ]
    if not domain.may_enroll(sequence, past, key=key, now=at):
        return []
    enrollment = Enrollment(
        id=time_ordered_id(),
        lead_id=lead_id,
        sequence=sequence.name,
        status="active",
        enrolled_at=at,
        key=key,
        context=data,
    )
    tx.session.add(enrollment)
    enrollments.append(enrollment)
    rows: list[dict[str, Any]] = [
        {
            "id": time_ordered_id(),
            "lead_id": lead_id,
            "sequence": sequence.name,
            "step": planned.step.number,
            "template": planned.step.template,
            "category": planned.step.category,
            "due_at": planned.due_at,
            "status": planned.status,
            "reason": planned.reason,
            "enrollment_id": enrollment.id,
            "condition": planned.step.condition,
            "immediate": planned.step.immediate,
            "variables": planned.variables,
            "attempts": 0,
        }
        for planned in domain.plan_steps(sequence, enrolled_at=at, data=data)
    ]
    add_steps(tx, rows)
    if not any(r["status"] == domain.PENDING for r in rows):
        enrollment.status, enrollment.ended_at, enrollment.ended_reason = "completed", at, "nothing left to send"
    return [cast("uuid.UUID", r["id"]) for r in rows if r["status"] == domain.PENDING]


async def end_each(
    tx: UnitOfWork, enrollments: list[Enrollment], *, reason: str, status: str = "exited", spare_immediate: bool = False
) -> int:
    """End these enrollments and cancel their steps not yet sent (but for their immediate
    marketing steps with ``spare_immediate``). Returns how many ended."""
    now = tx.now()
    for enrollment in enrollments:
        enrollment.status, enrollment.ended_at, enrollment.ended_reason = status, now, reason
        spared = (S.immediate.is_(False) | (S.category != "marketing")) if spare_immediate else S.id.is_not(None)
        await tx.session.execute(
            update(S)
            .where(S.enrollment_id == enrollment.id, S.status == domain.PENDING, spared)
            .values(status=domain.CANCELLED, reason=reason[:100], claimed_until=None)
            .execution_options(synchronize_session=False)
        )
    return len(enrollments)


async def end_enrollments(
    tx: UnitOfWork,
    *,
    catalog: domain.Catalog,
    lead_id: uuid.UUID | None,
    event_type: str,
    data: Mapping[str, Any] | None = None,
) -> int:
    """An exit event (``exit_on`` of a sequence) ends the person's enrollments in it and cancels
    the steps not yet sent; with ``reentry: {per: field}`` only the enrollment whose key the event
    carries (a payment ends the reminders of its own invoice, not of the others)."""
    if lead_id is None:
        return 0
    data = data or {}
    ending = [
        enrollment
        for enrollment in await active_enrollments(tx, lead_id)
        if domain.exit_ends(
            catalog.sequences.get(enrollment.sequence), key=enrollment.key, event_type=event_type, data=data
        )
    ]
    return await end_each(tx, ending, reason=event_type, spare_immediate=domain.spares_immediate(event_type))


async def finish_if_done(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    enrollment_id: uuid.UUID | None,
    catalog: domain.Catalog | None = None,
) -> None:
    """Complete the step's enrollment if it has no step left (see ``finish_done``)."""
    await finish_done(tx, [(lead_id, enrollment_id)], catalog)


async def finish_done(
    tx: UnitOfWork, steps: list[tuple[uuid.UUID, uuid.UUID | None]], catalog: domain.Catalog | None = None
) -> None:
    """Complete each of these steps' enrollments (``(lead_id, enrollment_id)``) that has no
    step left (one query for them all); with ``catalog``, a ``then`` sequence starts now."""
    ending = {enrollment_id: lead_id for lead_id, enrollment_id in steps if enrollment_id is not None}
    for chunk in chunks(list(ending)):
        left = set(
            await tx.session.scalars(
                select(S.enrollment_id).where(S.enrollment_id.in_(chunk), S.status == domain.PENDING).distinct()
            )
        )
        for enrollment_id in chunk:
            if enrollment_id not in left:
                await _complete(tx, lead_id=ending[enrollment_id], enrollment_id=enrollment_id, catalog=catalog)


async def _complete(
    tx: UnitOfWork, *, lead_id: uuid.UUID, enrollment_id: uuid.UUID, catalog: domain.Catalog | None
) -> None:
    enrollment = await tx.session.get(Enrollment, enrollment_id)
    if enrollment is None or enrollment.status != "active":
        return
    enrollment.status, enrollment.ended_at, enrollment.ended_reason = "completed", tx.now(), "all steps done"
    if catalog is None:
        return
    sequence = catalog.sequences.get(enrollment.sequence)
    if sequence is not None and sequence.then and sequence.then in catalog.sequences:
        await enroll(
            tx, sequence=catalog.sequences[sequence.then], lead_id=lead_id, at=tx.now(), data=enrollment.context
        )

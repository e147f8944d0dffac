"""Sending's use cases: claim the steps that are due under the sending policy, and record what
became of them (sent, suppressed, bounced, failed, held). The scheduled job that drives them is
``sender.Sender``."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, or_, select, update

from services.nurture import domain
from services.nurture.enrollment import finish_done, finish_if_done
from services.nurture.record import chunks, get_contact
from services.nurture.store import Contact, Enrollment, Message, ScheduledMessage, Takeover
from shared import events as ev
from shared.uow import UnitOfWork

S = ScheduledMessage
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """A claimed step with what is needed to write it, read in the claiming transaction."""

    id: uuid.UUID
    lead_id: uuid.UUID
    sequence: str
    step: int
    template: str
    category: str
    name: str | None
    email: str | None
    language: str
    consent_marketing: bool
    erased: bool
    due_at: datetime | None = None
    bounced: bool = False
    enrollment_id: uuid.UUID | None = None
    attempts: int = 1
    context: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Poisoned:
    """A due step the sending policy failed on (an odd value in its data): left unclaimed, for
    the sender to hold with backoff as a job failure."""

    id: uuid.UUID
    error: BaseException


@dataclass
class ClaimResult:
    claimed: list[Outgoing]
    deferred: list[str]  # reasons, for metrics
    skipped: int = 0
    poisoned: list[Poisoned] = field(default_factory=list)


async def _previous(tx: UnitOfWork, rows: list[ScheduledMessage]) -> dict[uuid.UUID, domain.Previous | None]:
    """For each step with a condition, the last email its enrollment sent before it, read for
    the whole claim in one query."""
    conditional = [r for r in rows if r.condition and r.enrollment_id is not None]
    enrollment_ids = list({r.enrollment_id for r in conditional if r.enrollment_id is not None})
    sent: dict[uuid.UUID | None, list[tuple[int, domain.Previous]]] = {}
    for chunk in chunks(enrollment_ids):
        found = await tx.session.execute(
            select(Message.enrollment_id, Message.step, Message.opened_at, Message.clicked_at).where(
                Message.enrollment_id.in_(chunk)
            )
        )
        for m in found:
            previous = domain.Previous(opened=m.opened_at is not None, clicked=m.clicked_at is not None)
            sent.setdefault(m.enrollment_id, []).append((m.step, previous))
    out: dict[uuid.UUID, domain.Previous | None] = {}
    for row in conditional:
        earlier = [(step, p) for step, p in sent.get(row.enrollment_id, []) if step < row.step]
        out[row.id] = max(earlier, key=lambda sp: sp[0])[1] if earlier else None
    return out


async def _recent_marketing(
    tx: UnitOfWork, lead_ids: set[uuid.UUID], *, now: datetime, window: timedelta
) -> dict[uuid.UUID, list[datetime]]:
    """Per person, the marketing emails sent in the cap's window and those claimed right now (in
    flight), read for the whole claim in two queries."""
    recent: dict[uuid.UUID, list[datetime]] = {i: [] for i in lead_ids}
    for chunk in chunks(list(lead_ids)):
        sent = await tx.session.execute(
            select(Message.lead_id, Message.sent_at).where(
                Message.lead_id.in_(chunk), Message.category == "marketing", Message.sent_at > now - window
            )
        )
        for lead_id, sent_at in sent:
            recent[lead_id].append(sent_at)
        flying = await tx.session.execute(
            select(S.lead_id, func.count())
            .where(S.lead_id.in_(chunk), S.status == domain.PENDING, S.category == "marketing", S.claimed_until > now)
            .group_by(S.lead_id)
        )
        for lead_id, count in flying:
            recent[lead_id] += [now] * count
    return recent


async def _defer(tx: UnitOfWork, row: ScheduledMessage, until: datetime) -> None:
    """Move a step later, and the later steps of its enrollment by as much, so the spacing the
    sequence asks for is kept (a 'before' step keeps its date unless it would now come first)."""
    shift = until - row.due_at
    row.due_at = until
    if row.enrollment_id is None or shift <= timedelta(0):
        return
    later = await tx.session.scalars(
        select(S).where(S.enrollment_id == row.enrollment_id, S.step > row.step, S.status == domain.PENDING)
    )
    for other in later:
        other.due_at = other.due_at + shift


def _due(now: datetime) -> Any:
    """Pending, due and not claimed (a step held after a failure is claimed until its retry)."""
    return (S.status == domain.PENDING) & (S.due_at <= now) & or_(S.claimed_until.is_(None), S.claimed_until <= now)


async def due_step_ids(tx: UnitOfWork, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """The ids a claim would look at, oldest first (to claim them one by one when a whole
    claim failed)."""
    held = select(Takeover.lead_id).where(Takeover.ended_at.is_(None))
    query = select(S.id).where(_due(now), S.lead_id.not_in(held)).order_by(S.due_at, S.id).limit(limit)
    return list(await tx.session.scalars(query))


def _outgoing(row: ScheduledMessage, contact: Contact | None, enrollment: Enrollment | None, attempts: int) -> Outgoing:
    return Outgoing(
        id=row.id,
        lead_id=row.lead_id,
        sequence=row.sequence,
        step=row.step,
        template=row.template,
        category=row.category,
        name=contact.name if contact else None,
        email=contact.email if contact else None,
        language=contact.language if contact else "en",
        consent_marketing=bool(contact and contact.consent_marketing),
        erased=contact is None or contact.erased_at is not None,
        due_at=row.due_at,
        bounced=bool(contact and contact.bounced_at),
        enrollment_id=row.enrollment_id,
        attempts=attempts,
        context=dict(enrollment.context or {}) if enrollment else {},
        variables=dict(row.variables or {}),
    )


async def claim_due_steps(
    tx: UnitOfWork,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    policy: domain.SendingPolicy | None = None,
    only: list[uuid.UUID] | None = None,
) -> ClaimResult:
    """Claim up to ``limit`` due steps for ``lease`` so no other sender takes them meanwhile,
    after the sending policy: a step whose condition fails is skipped, one in the person's quiet
    hours or over the marketing cap is moved to when it may go.

    A batch costs a few statements whatever its size: the due steps come with their person and
    enrollment in one query, the cap and conditions are read for all of them at once, and the
    claim is one conditional update that returns the rows it won, so two instances never both
    win one row (on SQLite the write lock serialises them, on PostgreSQL the second update
    re-reads the claimed row and leaves it out).

    A step whose policy cannot be worked out (a rule failing on an odd value) is left
    unclaimed in ``poisoned``, so it never fails the claim of the others. ``only`` restricts the
    claim to these steps (one at a time, after a whole claim failed)."""
    policy = policy or domain.NO_LIMITS
    result = ClaimResult([], [])
    held = set(await tx.session.scalars(select(Takeover.lead_id).where(Takeover.ended_at.is_(None))))
    unclaimed = or_(S.claimed_until.is_(None), S.claimed_until <= now)
    query = (
        select(S, Contact, Enrollment)
        .join(Contact, Contact.lead_id == S.lead_id, isouter=True)
        .join(Enrollment, Enrollment.id == S.enrollment_id, isouter=True)
        .where(S.status == domain.PENDING, S.due_at <= now, unclaimed)
    )
    if held:
        # Held people are left out here too, or their old steps would fill every batch.
        query = query.where(S.lead_id.not_in(held))
    if only is not None:
        query = query.where(S.id.in_(only))
    found = {
        row.id: (row, contact, enrollment)
        for row, contact, enrollment in await tx.session.execute(query.order_by(S.due_at, S.id).limit(limit))
    }
    due = domain.select_due(
        [domain.PendingStep(id=r.id, lead_id=r.lead_id, due_at=r.due_at) for r, _, _ in found.values()],
        now=now,
        held=held,
        limit=limit,
    )
    rows = [found[pending.id][0] for pending in due]
    marketing = {r.lead_id for r in rows if r.category == "marketing"}
    recent = await _recent_marketing(tx, marketing, now=now, window=policy.cap_window)
    previous = await _previous(tx, rows)
    planned: list[ScheduledMessage] = []
    for row in rows:
        if row.status != domain.PENDING:
            continue
        contact = found[row.id][1]
        timezone_name = contact.timezone if contact else None
        if not domain.known_zone(timezone_name):
            # Stored before capture validated it (or arrived in an old event): quiet hours go
            # by UTC for this person, and someone should correct the value.
            log.warning(
                "lead %s has time zone %r, which names no zone: quiet hours use UTC",
                row.lead_id,
                (timezone_name or "")[:80],
            )
        try:
            plan = domain.plan_send(
                now=now,
                category=row.category,
                immediate=row.immediate,
                condition=row.condition,
                previous=previous.get(row.id),
                timezone_name=timezone_name,
                quiet=policy.quiet,
                recent_marketing=recent.get(row.lead_id, []),
                cap=policy.cap,
                cap_window=policy.cap_window,
            )
        except Exception as exc:  # one step's odd data must not fail the claim of the others
            result.poisoned.append(Poisoned(row.id, exc))
            continue
        if plan.action == "skip":
            row.status, row.reason = domain.SKIPPED, (plan.reason or "condition")[:100]
            await finish_if_done(tx, lead_id=row.lead_id, enrollment_id=row.enrollment_id)
            result.skipped += 1
            continue
        if plan.action == "defer" and plan.until is not None:
            await _defer(tx, row, plan.until)
            result.deferred.append(plan.reason or "deferred")
            continue
        planned.append(row)
        if row.category == "marketing":
            # In flight from now on: the person's next marketing step in this batch counts it.
            recent[row.lead_id].append(now)
    won: dict[uuid.UUID, int] = {}
    for chunk in chunks([row.id for row in planned]):
        claimed = await tx.session.execute(
            update(S)
            .where(S.id.in_(chunk), S.status == domain.PENDING, unclaimed)
            .values(claimed_until=now + lease, attempts=S.attempts + 1)
            .returning(S.id, S.attempts)
            .execution_options(synchronize_session=False)
        )
        won.update((step_id, attempts) for step_id, attempts in claimed)
    for row in planned:
        if row.id not in won:
            continue  # another instance claimed it first
        _, contact, enrollment = found[row.id]
        result.claimed.append(_outgoing(row, contact, enrollment, won[row.id]))
    return result


async def close_step(tx: UnitOfWork, step_id: uuid.UUID, **values: Any) -> bool:
    """Set ``values`` on a step still pending; whether it was (another path may have closed it)."""
    result = cast(
        "CursorResult[Any]",
        await tx.session.execute(
            update(S)
            .where(S.id == step_id, S.status == domain.PENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


async def suppress_step(tx: UnitOfWork, step: Outgoing, *, reason: str, catalog: domain.Catalog | None = None) -> bool:
    """A step that may not go (no consent, no address, bounced) is closed without an email."""
    if not await close_step(tx, step.id, status=domain.SUPPRESSED, reason=reason, claimed_until=None):
        return False
    await finish_if_done(tx, lead_id=step.lead_id, enrollment_id=step.enrollment_id, catalog=catalog)
    return True


@dataclass(frozen=True)
class Sent:
    """An email the transport accepted, as it went out."""

    step: Outgoing
    subject: str
    body_text: str
    language: str
    to_address: str


async def record_sent(tx: UnitOfWork, sent: list[Sent], *, catalog: domain.Catalog | None = None) -> set[uuid.UUID]:
    """The transport accepted these emails: mark each step sent, keep the message, say
    ``email.sent``; one update and one insert for the batch.

    Returns the ids recorded. A step no longer pending is left out (erased or exited while the
    email was on its way, or sent by another instance after our claim expired): nothing is
    recorded for it."""
    now = tx.now()
    recorded: set[uuid.UUID] = set()
    for chunk in chunks([s.step.id for s in sent]):
        marked = await tx.session.scalars(
            update(S)
            .where(S.id.in_(chunk), S.status == domain.PENDING)
            .values(status=domain.SENT, sent_at=now, claimed_until=None, reason=None, last_error=None)
            .returning(S.id)
            .execution_options(synchronize_session=False)
        )
        recorded.update(marked)
    done = [s for s in sent if s.step.id in recorded]
    if done:
        # Core, not ORM objects: these rows are only inserted (building 500 instrumented objects
        # a batch cost more than the insert), in one executemany, before anything below reads.
        await tx.session.execute(
            insert(Message),
            [
                {
                    "message_id": s.step.id,
                    "lead_id": s.step.lead_id,
                    "sequence": s.step.sequence,
                    "step": s.step.step,
                    "template": s.step.template,
                    "language": s.language,
                    "subject": s.subject,
                    "category": s.step.category,
                    "to_address": s.to_address,
                    "sent_at": now,
                    "body_text": s.body_text,
                    "enrollment_id": s.step.enrollment_id,
                }
                for s in done
            ],
        )
    for s in done:
        step = s.step
        tx.emit(
            "email.sent",
            ev.EmailSent(
                message_id=step.id,
                sequence=step.sequence,
                step=step.step,
                template=step.template,
                subject=s.subject,
                category=cast("domain.Category", step.category),  # validated by the event
            ),
            lead_id=step.lead_id,
        )
    await finish_done(tx, [(s.step.lead_id, s.step.enrollment_id) for s in done], catalog)
    return recorded


async def record_failure(tx: UnitOfWork, step: Outgoing, *, error: str, retry_at: datetime | None) -> bool:
    """The transport refused for now: the step stays pending and claimed until ``retry_at``
    (backoff), so it is retried then and not in a tight loop; with no retry left it fails.
    Returns True when the step gave up."""
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values.update(status=domain.FAILED, reason="send_failed", claimed_until=None)
    else:
        values.update(claimed_until=retry_at)
    await close_step(tx, step.id, **values)
    if retry_at is None:
        await finish_if_done(tx, lead_id=step.lead_id, enrollment_id=step.enrollment_id)
    return retry_at is None


async def hold_step(tx: UnitOfWork, step_id: uuid.UUID, *, error: str, retry_at: datetime | None) -> None:
    """The sender failed on this step (a job failure: its data, not the transport): it is held,
    claimed until ``retry_at`` (the job's backoff), or failed with its reason when the job gave
    up on it (``retry_at`` None)."""
    row = await tx.session.get(S, step_id)
    if row is None or row.status != domain.PENDING:
        return
    row.last_error = error[:2000]
    if retry_at is not None:
        row.claimed_until = retry_at
        return
    row.status, row.reason, row.claimed_until = domain.FAILED, "job_failed", None
    await finish_if_done(tx, lead_id=row.lead_id, enrollment_id=row.enrollment_id)


async def queue_depth(tx: UnitOfWork, *, now: datetime) -> int:
    """Pending steps already due (held ones included: they are waiting too)."""
    count = await tx.session.scalar(
        select(func.count()).select_from(S).where(S.status == domain.PENDING, S.due_at <= now)
    )
    return count or 0


async def list_messages(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Message]:
    """Messages sent to a person, oldest first (404 for a person nurture does not know)."""
    await get_contact(tx, lead_id)
    rows = await tx.session.scalars(
        select(Message).where(Message.lead_id == lead_id).order_by(Message.sent_at, Message.step, Message.message_id)
    )
    return list(rows)

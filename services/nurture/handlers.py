"""Nurture's use cases: one async function per thing that can happen."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from services.nurture import domain
from services.nurture.store import (
    Contact,
    Enrollment,
    Feedback,
    Message,
    Reply,
    ScheduledMessage,
    SequenceDefinition,
    Task,
    Takeover,
)
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.privacy import forget_person
from shared.uow import UnitOfWork

S = ScheduledMessage
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sequences as data


async def current_catalog(tx: UnitOfWork, builtin: domain.Catalog) -> domain.Catalog:
    """The built-in sequences with those written through the API in their place. Read per
    transaction (the table is small) so every instance sees a PUT at once; once per transaction,
    not once per event of a consumed batch."""
    memo = tx.memo.get(_CATALOG_MEMO)
    if memo is not None and memo[0] is builtin:
        return memo[1]
    rows = list(await tx.session.scalars(select(SequenceDefinition)))
    catalog = builtin
    if rows:
        from services.nurture.content import parse_sequence

        custom = {row.name: parse_sequence(row.definition) for row in rows}
        catalog = domain.Catalog.of([*(s for n, s in builtin.sequences.items() if n not in custom), *custom.values()])
    tx.memo[_CATALOG_MEMO] = (builtin, catalog)
    return catalog


_CATALOG_MEMO = "nurture.catalog"


async def get_sequence(tx: UnitOfWork, builtin: domain.Catalog, name: str) -> tuple[domain.Sequence, str]:
    catalog = await current_catalog(tx, builtin)
    sequence = catalog.sequences.get(name)
    if sequence is None:
        raise NotFound(f"no sequence named {name!r}")
    custom = await tx.session.get(SequenceDefinition, name)
    return sequence, "api" if custom is not None else "builtin"


async def put_sequence(
    tx: UnitOfWork,
    builtin: domain.Catalog,
    *,
    name: str,
    definition: dict[str, Any],
    missing_templates: Callable[[set[str]], list[str]],
) -> domain.Sequence:
    """Validate and store a sequence definition; refused (422) with the reason: an unknown
    trigger, a bad delay, a missing template, a cycle through ``then``. New enrollments use it;
    steps already scheduled keep the plan they were made with."""
    from services.nurture.content import parse_sequence

    definition = {**definition, "name": definition.get("name", name)}
    if definition["name"] != name:
        raise Invalid(f"the body names {definition['name']!r} but the path names {name!r}")
    try:
        sequence = parse_sequence(definition)
        missing = missing_templates({step.template for step in sequence.steps})
        if missing:
            raise domain.SequenceError(f"{name}: template(s) {', '.join(missing)} do not exist")
        (await current_catalog(tx, builtin)).replaced(sequence)
    except domain.SequenceError as exc:
        raise Invalid(str(exc)) from None
    row = await tx.session.get(SequenceDefinition, name)
    if row is None:
        tx.session.add(SequenceDefinition(name=name, definition=definition, updated_at=tx.now()))
    else:
        row.definition = definition
        row.updated_at = tx.now()
    tx.memo.pop(_CATALOG_MEMO, None)
    return sequence


# --------------------------------------------------------------------------- contacts and enrollment


def profile(contact: Contact) -> dict[str, Any]:
    return {
        "stage": contact.stage,
        "tier": contact.tier,
        "industry": contact.industry,
        "language": (contact.language or "en").split("-")[0],
        "channel": contact.channel,
        "segment": contact.segment,
    }


# Per transaction: what is known of each person read (a Contact, or None when they have none),
# and every enrollment of each person read, with those added since. Filled by ``prefetch`` for a
# consumed batch, else on first use; a person created in the transaction is pending, which the
# session's identity map does not hold, so a second ``session.get`` would flush and query again.
_CONTACTS = "nurture.contacts"
_ENROLLMENTS = "nurture.enrollments"
_CHUNK = 500


def _chunks(ids: list[uuid.UUID]) -> list[list[uuid.UUID]]:
    return [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]


async def prefetch(tx: UnitOfWork, events: list[ev.Envelope], *, builtin: domain.Catalog) -> None:
    """Read what a consumed batch's events will read of their people (contacts, enrollments) and
    the catalog in a few queries, so the handlers query nothing per event and their inserts wait
    for the commit instead of being flushed one event at a time by each query."""
    lead_ids = list(dict.fromkeys(e.lead_id for e in events if e.lead_id is not None))
    contacts: dict[uuid.UUID, Contact | None] = tx.memo.setdefault(_CONTACTS, {})
    for chunk in _chunks([i for i in lead_ids if i not in contacts]):
        found = {c.lead_id: c for c in await tx.session.scalars(select(Contact).where(Contact.lead_id.in_(chunk)))}
        contacts.update((i, found.get(i)) for i in chunk)
    enrollments: dict[uuid.UUID, list[Enrollment]] = tx.memo.setdefault(_ENROLLMENTS, {})
    for chunk in _chunks([i for i in lead_ids if i not in enrollments]):
        lists: dict[uuid.UUID, list[Enrollment]] = {i: [] for i in chunk}
        for enrollment in await tx.session.scalars(select(Enrollment).where(Enrollment.lead_id.in_(chunk))):
            lists[enrollment.lead_id].append(enrollment)
        enrollments.update(lists)
    await current_catalog(tx, builtin)


async def _known_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact | None:
    known: dict[uuid.UUID, Contact | None] = tx.memo.setdefault(_CONTACTS, {})
    if lead_id not in known:
        known[lead_id] = await tx.session.get(Contact, lead_id)
    return known[lead_id]


def _add_contact(tx: UnitOfWork, contact: Contact) -> Contact:
    tx.session.add(contact)
    tx.memo.setdefault(_CONTACTS, {})[contact.lead_id] = contact
    return contact


async def _enrollments(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Enrollment]:
    """Every enrollment of the person (any status), read once per transaction; ``enroll`` adds
    the new ones to this list."""
    known: dict[uuid.UUID, list[Enrollment]] = tx.memo.setdefault(_ENROLLMENTS, {})
    if lead_id not in known:
        known[lead_id] = list(await tx.session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)))
    return known[lead_id]


async def _contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact:
    """The person, or a placeholder (no address yet) for an event that came before the capture."""
    contact = await _known_contact(tx, lead_id)
    if contact is None:
        now = tx.now()
        contact = _add_contact(
            tx,
            Contact(
                lead_id=lead_id, language="en", timezone="UTC", segment="default", consent_marketing=False,
                engagement_score=0, created_at=now, updated_at=now,
            ),
        )
    return contact


def _update_profile(contact: Contact, event_type: str, payload: Any, now: datetime) -> None:
    if isinstance(payload, ev.LeadCaptured):
        first = contact.email is None and contact.erased_at is None
        if first:
            contact.name, contact.email = payload.name, payload.email
            contact.language, contact.timezone, contact.segment = payload.language, payload.timezone, payload.segment
            contact.industry, contact.channel = payload.industry, payload.channel
            contact.stage = payload.stage
        contact.consent_marketing = domain.merged_consent(contact.consent_marketing, payload.consent_marketing)
    elif isinstance(payload, ev.LeadStageChanged):
        contact.stage = payload.to_stage
    elif isinstance(payload, ev.ClientTierChanged):
        contact.tier = payload.to_tier
    elif isinstance(payload, ev.DealWon) and payload.tier:
        contact.tier = payload.tier
    else:
        return
    contact.updated_at = now


async def on_event(
    tx: UnitOfWork,
    *,
    builtin: domain.Catalog,
    event: ev.Envelope,
    payload: Any,
    on_scheduled: Callable[[], None] | None = None,
    on_erased: Callable[[list[uuid.UUID]], None] | None = None,
) -> list[ScheduledMessage]:
    """Whatever happened to a person: keep what nurture knows of them, end the enrollments the
    event is an exit of, and enroll them in the sequences it starts for their segment.
    ``on_erased`` gets the ids of an erased person's messages once the erasure committed (the
    mail store forgets them)."""
    lead_id = event.lead_id
    if lead_id is None:
        return []
    if event.type == "lead.erased":
        sent = await erase_contact(tx, lead_id)
        if on_erased is not None and sent:
            tx.after_commit(lambda: on_erased(sent))
        return []
    now = tx.now()
    existing = await _known_contact(tx, lead_id)
    if existing is not None and existing.erased_at is not None:
        return []  # an erased person stays erased
    contact = await _contact(tx, lead_id)
    _update_profile(contact, event.type, payload, now)
    catalog = await current_catalog(tx, builtin)
    data = payload.model_dump(mode="json") if hasattr(payload, "model_dump") else {}
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type=event.type, data=data)
    if event.type == "churn_risk.raised":
        await _task_for_churn_risk(tx, contact, event, payload)
    if isinstance(payload, ev.LeadCaptured) and payload.duplicate:
        return []
    scheduled: list[ScheduledMessage] = []
    for sequence in catalog.triggered_by(event.type, profile=profile(contact)):
        scheduled += await enroll(tx, sequence=sequence, lead_id=lead_id, at=now, data=data)
    if scheduled and on_scheduled is not None:
        tx.after_commit(on_scheduled)
    return scheduled


def _anchor(sequence: domain.Sequence, data: Mapping[str, Any]) -> datetime | None:
    if sequence.anchor is None or not data.get(sequence.anchor):
        return None
    return datetime.fromisoformat(str(data[sequence.anchor]).replace("Z", "+00:00"))


async def enroll(
    tx: UnitOfWork,
    *,
    sequence: domain.Sequence,
    lead_id: uuid.UUID,
    at: datetime,
    data: Mapping[str, Any] | None = None,
) -> list[ScheduledMessage]:
    """Enroll a person in a sequence when its re-entry rule allows, and schedule its steps, every
    step a durable row in this same transaction."""
    data = dict(data or {})
    key = sequence.key_for(data, now=at)
    enrollments = await _enrollments(tx, lead_id)
    past = [
        domain.PastEnrollment(key=e.key, active=e.status == "active", ended_at=e.ended_at)
        for e in enrollments
        if e.sequence == sequence.name
    ]
    if not domain.may_enroll(sequence, past, key=key, now=at):
        return []
    enrollment = Enrollment(
        id=uuid.uuid4(), lead_id=lead_id, sequence=sequence.name, status="active", enrolled_at=at, key=key,
        context=data,
    )
    tx.session.add(enrollment)
    enrollments.append(enrollment)
    anchor = _anchor(sequence, data)
    rows = []
    for step, due_at in sequence.schedule(at, anchor):
        variables: dict[str, Any] = {}
        if step.before is not None:
            variables["days_before"] = step.before.days
        rows.append(
            ScheduledMessage(
                id=uuid.uuid4(),
                lead_id=lead_id,
                sequence=sequence.name,
                step=step.number,
                template=step.template,
                category=step.category,
                due_at=due_at or at,
                status=domain.PENDING if due_at is not None else domain.SKIPPED,
                reason=None if due_at is not None else "superseded",
                enrollment_id=enrollment.id,
                condition=step.condition,
                immediate=step.immediate,
                variables=variables or None,
                attempts=0,
            )
        )
    tx.session.add_all(rows)
    if not any(r.status == domain.PENDING for r in rows):
        enrollment.status, enrollment.ended_at, enrollment.ended_reason = "completed", at, "nothing left to send"
    return [r for r in rows if r.status == domain.PENDING]


async def _end(
    tx: UnitOfWork, enrollments: list[Enrollment], *, reason: str, status: str = "exited", spare_immediate: bool = False
) -> int:
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


async def _active(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Enrollment]:
    return [e for e in await _enrollments(tx, lead_id) if e.status == "active"]


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
    ending = []
    for enrollment in await _active(tx, lead_id):
        sequence = catalog.sequences.get(enrollment.sequence)
        if sequence is None or event_type not in sequence.exit_on:
            continue
        per = sequence.reentry.per if sequence.reentry.mode == "per" else None
        if per and data.get(per) is not None and str(data[per]) != enrollment.key:
            continue
        ending.append(enrollment)
    # The immediate answer to what the person did (a welcome) still goes when an exit arrives
    # with the trigger (a lead captured and won in one batch after a broker outage); a bounce or
    # an erasure stops it like everything else (and consent, takeover are checked at send).
    spare = event_type not in ("email.bounced", "lead.erased", "lead.unsubscribed")
    return await _end(tx, ending, reason=event_type, spare_immediate=spare)


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> list[uuid.UUID]:
    """Forget a person's name, address and words everywhere in nurture; counts and dates stay,
    anonymous, and nothing more is sent. Returns the ids of the messages sent to them."""
    now = tx.now()
    contact = await _known_contact(tx, lead_id)
    address = contact.email if contact is not None else None
    if contact is None:
        # Keep a tombstone so a late lead.captured cannot bring the person back.
        _add_contact(tx, Contact(lead_id=lead_id, erased_at=now, created_at=now, updated_at=now, engagement_score=0))
    else:
        contact.name = None
        contact.email = None
        contact.industry = None
        contact.erased_at = contact.erased_at or now
        contact.updated_at = now
    # Subjects and bodies are personalised (first name), so they go too.
    await tx.session.execute(
        update(Message).where(Message.lead_id == lead_id).values(to_address=None, subject=None, body_text=None)
    )
    await _end(tx, await _active(tx, lead_id), reason="erased", status="cancelled")
    await tx.session.execute(
        update(S)
        .where(S.lead_id == lead_id, S.status == domain.PENDING)
        .values(status=domain.CANCELLED, reason="erased", claimed_until=None)
    )
    await tx.session.execute(update(Enrollment).where(Enrollment.lead_id == lead_id).values(context=None))
    await tx.session.execute(update(S).where(S.lead_id == lead_id).values(variables=None))
    # What a human or the person wrote may name them.
    await tx.session.execute(update(Takeover).where(Takeover.lead_id == lead_id).values(reason=None))
    await tx.session.execute(
        update(Reply).where(Reply.lead_id == lead_id).values(from_address=None, subject=None, text=None)
    )
    if address:
        # E-mails from their address that no thread matched are theirs too.
        await tx.session.execute(
            update(Reply)
            .where(Reply.lead_id.is_(None), func.lower(Reply.from_address) == address.lower())
            .values(from_address=None, subject=None, text=None)
        )
    await tx.session.execute(update(Feedback).where(Feedback.lead_id == lead_id).values(comment=None))
    await tx.session.execute(update(Task).where(Task.lead_id == lead_id).values(detail=None))
    for task in await tx.session.scalars(select(Task).where(Task.lead_id == lead_id)):
        task.title = f"{task.kind} (the person was erased)"  # titles name the person
    await forget_person(tx, lead_id)
    return list(await tx.session.scalars(select(Message.message_id).where(Message.lead_id == lead_id)))


async def get_contact(tx: UnitOfWork, lead_id: uuid.UUID) -> Contact:
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        raise NotFound(f"no lead {lead_id} in nurture")
    return contact


async def list_messages(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Message]:
    """Messages sent to a person, oldest first."""
    await get_contact(tx, lead_id)
    rows = await tx.session.scalars(
        select(Message).where(Message.lead_id == lead_id).order_by(Message.sent_at, Message.step, Message.message_id)
    )
    return list(rows)


# --------------------------------------------------------------------------- human takeover


async def active_takeover(tx: UnitOfWork, lead_id: uuid.UUID) -> Takeover | None:
    return await tx.session.scalar(select(Takeover).where(Takeover.lead_id == lead_id, Takeover.ended_at.is_(None)))


async def start_takeover(
    tx: UnitOfWork, lead_id: uuid.UUID, *, by: str, reason: str | None, catalog: domain.Catalog | None = None
) -> Takeover:
    """A human takes a person over (``takeover.started``): every automated email to them is held;
    sequences that list ``takeover`` among their exits end."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is not None:
        raise Conflict(f"lead {lead_id} is already taken over by {current.by} since {current.started_at.isoformat()}")
    takeover = Takeover(id=uuid.uuid4(), lead_id=lead_id, by=by, reason=reason, started_at=tx.now())
    tx.session.add(takeover)
    tx.emit("takeover.started", ev.TakeoverStarted(by=by, reason=reason), lead_id=lead_id)
    if catalog is not None:
        await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type="takeover.started")
    return takeover


async def end_takeover(tx: UnitOfWork, lead_id: uuid.UUID, *, by: str | None) -> Takeover:
    """The human hands the person back (``takeover.ended``): held steps go out."""
    await get_contact(tx, lead_id)
    current = await active_takeover(tx, lead_id)
    if current is None:
        raise Conflict(f"lead {lead_id} is not taken over")
    current.ended_at = tx.now()
    current.ended_by = by
    tx.emit("takeover.ended", ev.TakeoverEnded(by=by), lead_id=lead_id)
    return current


# --------------------------------------------------------------------------- sending


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


@dataclass
class Policy:
    quiet: domain.QuietHours
    cap: int


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
    for chunk in _chunks(enrollment_ids):
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


async def _recent_marketing(tx: UnitOfWork, lead_ids: set[uuid.UUID], now: datetime) -> dict[uuid.UUID, list[datetime]]:
    """Per person, the marketing emails sent in the last 7 days and those claimed right now (in
    flight), read for the whole claim in two queries."""
    recent: dict[uuid.UUID, list[datetime]] = {i: [] for i in lead_ids}
    for chunk in _chunks(list(lead_ids)):
        sent = await tx.session.execute(
            select(Message.lead_id, Message.sent_at).where(
                Message.lead_id.in_(chunk), Message.category == "marketing", Message.sent_at > now - domain.CAP_WINDOW
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


async def claim_due_steps(
    tx: UnitOfWork,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    policy: Policy | None = None,
    only: list[uuid.UUID] | None = None,
) -> ClaimResult:
    """Claim up to ``limit`` due steps for ``lease`` so no other sender takes them meanwhile,
    after the sending policy: a step whose condition fails is skipped, one in the person's quiet
    hours or over the weekly cap is moved to when it may go.

    A batch costs a few statements whatever its size: the due steps come with their person and
    enrollment in one query, the cap and conditions are read for all of them at once, and the
    claim is one conditional update that returns the rows it won, so two instances never both
    win one row (on SQLite the write lock serialises them, on PostgreSQL the second update
    re-reads the claimed row and leaves it out).

    A step whose policy cannot be worked out (a rule failing on an odd value) is left
    unclaimed in ``poisoned``, so it never fails the claim of the others. ``only`` restricts the
    claim to these steps (one at a time, after a whole claim failed)."""
    policy = policy or Policy(domain.QuietHours(0, 0), cap=10**6)
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
        now=now, held=held, limit=limit,
    )
    rows = [found[pending.id][0] for pending in due]
    recent = await _recent_marketing(tx, {r.lead_id for r in rows if r.category == "marketing"}, now)
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
            log.warning("lead %s has time zone %r, which names no zone: quiet hours use UTC",
                        row.lead_id, (timezone_name or "")[:80])
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
            )
        except Exception as exc:  # one step's odd data must not fail the claim of the others
            result.poisoned.append(Poisoned(row.id, exc))
            continue
        if plan.action == "skip":
            row.status, row.reason = domain.SKIPPED, (plan.reason or "condition")[:100]
            await _finish_if_done(tx, row.lead_id, row.enrollment_id)
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
    for chunk in _chunks([row.id for row in planned]):
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
        result.claimed.append(
            Outgoing(
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
                attempts=won[row.id],
                context=dict(enrollment.context or {}) if enrollment else {},
                variables=dict(row.variables or {}),
            )
        )
    return result


async def _finish_if_done(
    tx: UnitOfWork, lead_id: uuid.UUID, enrollment_id: uuid.UUID | None, catalog: domain.Catalog | None = None
) -> None:
    await _finish_done(tx, [(lead_id, enrollment_id)], catalog)


async def _finish_done(
    tx: UnitOfWork, steps: list[tuple[uuid.UUID, uuid.UUID | None]], catalog: domain.Catalog | None = None
) -> None:
    """Complete each of these steps' enrollments that has no step left (one query for them all);
    a ``then`` sequence starts now."""
    ending = {enrollment_id: lead_id for lead_id, enrollment_id in steps if enrollment_id is not None}
    for chunk in _chunks(list(ending)):
        left = set(
            await tx.session.scalars(
                select(S.enrollment_id).where(S.enrollment_id.in_(chunk), S.status == domain.PENDING).distinct()
            )
        )
        for enrollment_id in chunk:
            if enrollment_id not in left:
                await _complete(tx, ending[enrollment_id], enrollment_id, catalog)


async def _complete(
    tx: UnitOfWork, lead_id: uuid.UUID, enrollment_id: uuid.UUID, catalog: domain.Catalog | None
) -> None:
    enrollment = await tx.session.get(Enrollment, enrollment_id)
    if enrollment is None or enrollment.status != "active":
        return
    enrollment.status, enrollment.ended_at, enrollment.ended_reason = "completed", tx.now(), "all steps done"
    sequence = catalog.sequences.get(enrollment.sequence) if catalog else None
    if sequence is not None and sequence.then and sequence.then in catalog.sequences:  # type: ignore[union-attr]
        await enroll(
            tx, sequence=catalog.sequences[sequence.then], lead_id=lead_id, at=tx.now(),  # type: ignore[union-attr]
            data=enrollment.context,
        )


async def suppress_step(
    tx: UnitOfWork, step: Outgoing, *, reason: str, catalog: domain.Catalog | None = None
) -> bool:
    """A step that may not go (no consent, no address, bounced) is closed without an email."""
    result = await tx.session.execute(
        update(S)
        .where(S.id == step.id, S.status == domain.PENDING)
        .values(status=domain.SUPPRESSED, reason=reason, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await _finish_if_done(tx, step.lead_id, step.enrollment_id, catalog)
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
    ``email.sent``; one update for the batch, and its inserts go together at the commit.

    Returns the ids recorded. A step no longer pending is left out (erased or exited while the
    email was on its way, or sent by another instance after our claim expired): nothing is
    recorded for it."""
    now = tx.now()
    recorded: set[uuid.UUID] = set()
    for chunk in _chunks([s.step.id for s in sent]):
        marked = await tx.session.scalars(
            update(S)
            .where(S.id.in_(chunk), S.status == domain.PENDING)
            .values(status=domain.SENT, sent_at=now, claimed_until=None, reason=None, last_error=None)
            .returning(S.id)
            .execution_options(synchronize_session=False)
        )
        recorded.update(marked)
    done = [s for s in sent if s.step.id in recorded]
    for s in done:
        step = s.step
        tx.session.add(
            Message(
                message_id=step.id,
                lead_id=step.lead_id,
                sequence=step.sequence,
                step=step.step,
                template=step.template,
                language=s.language,
                subject=s.subject,
                category=step.category,
                to_address=s.to_address,
                sent_at=now,
                body_text=s.body_text,
                enrollment_id=step.enrollment_id,
            )
        )
        tx.emit(
            "email.sent",
            ev.EmailSent(
                message_id=step.id,
                sequence=step.sequence,
                step=step.step,
                template=step.template,
                subject=s.subject,
                category=step.category,  # type: ignore[arg-type]
            ),
            lead_id=step.lead_id,
        )
    await _finish_done(tx, [(s.step.lead_id, s.step.enrollment_id) for s in done], catalog)
    return recorded


async def record_failure(
    tx: UnitOfWork, step: Outgoing, *, error: str, retry_at: datetime | None
) -> bool:
    """The transport refused for now: the step stays pending and claimed until ``retry_at``
    (backoff), so it is retried then and not in a tight loop; with no retry left it fails.
    Returns True when the step gave up."""
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values.update(status=domain.FAILED, reason="send_failed", claimed_until=None)
    else:
        values.update(claimed_until=retry_at)
    await tx.session.execute(
        update(S).where(S.id == step.id, S.status == domain.PENDING).values(**values)
        .execution_options(synchronize_session=False)
    )
    if retry_at is None:
        await _finish_if_done(tx, step.lead_id, step.enrollment_id)
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
    await _finish_if_done(tx, row.lead_id, row.enrollment_id)


async def queue_depth(tx: UnitOfWork, *, now: datetime) -> int:
    """Pending steps already due (held ones included: they are waiting too)."""
    count = await tx.session.scalar(
        select(func.count()).select_from(S).where(S.status == domain.PENDING, S.due_at <= now)
    )
    return count or 0


# --------------------------------------------------------------------------- engagement and tracking


def _engage(tx: UnitOfWork, contact: Contact, kind: str, *, threshold: int) -> None:
    now = tx.now()
    contact.engagement_score = domain.engagement_after(
        contact.engagement_score or 0, contact.engaged_at, now=now, kind=kind
    )
    contact.engaged_at = now
    if domain.becomes_sales_ready(
        contact.engagement_score, threshold=threshold, already=contact.sales_ready_at is not None
    ):
        contact.sales_ready_at = now
        tx.emit(
            "lead.sales_ready",
            ev.LeadSalesReady(
                engagement_score=contact.engagement_score,
                reason=f"engagement {contact.engagement_score} reached {threshold} (last: {kind})",
            ),
            lead_id=contact.lead_id,
        )


@dataclass(frozen=True)
class Tracked:
    """What a tracking hit touched, for metrics."""

    sequence: str
    step: int
    first: bool


async def record_open(tx: UnitOfWork, message_id: uuid.UUID, *, threshold: int) -> Tracked | None:
    """The open pixel loaded: the first open is recorded and published (``email.opened``)."""
    message = await tx.session.get(Message, message_id)
    if message is None:
        return None
    first = message.opened_at is None
    if first:
        message.opened_at = tx.now()
        tx.emit("email.opened", ev.EmailOpened(message_id=message_id), lead_id=message.lead_id)
        contact = await tx.session.get(Contact, message.lead_id)
        if contact is not None and contact.erased_at is None:
            _engage(tx, contact, "open", threshold=threshold)
    return Tracked(message.sequence, message.step, first)


async def record_click(tx: UnitOfWork, message_id: uuid.UUID, url: str, *, threshold: int) -> Tracked | None:
    """A tracked link was followed (``email.clicked``); a click implies the email was opened."""
    message = await tx.session.get(Message, message_id)
    if message is None:
        return None
    now = tx.now()
    first = message.clicked_at is None
    message.opened_at = message.opened_at or now
    message.clicked_at = message.clicked_at or now
    tx.emit("email.clicked", ev.EmailClicked(message_id=message_id, url=url), lead_id=message.lead_id)
    if first:
        contact = await tx.session.get(Contact, message.lead_id)
        if contact is not None and contact.erased_at is None:
            _engage(tx, contact, "click", threshold=threshold)
    return Tracked(message.sequence, message.step, first)


async def unsubscribe(
    tx: UnitOfWork, lead_id: uuid.UUID, *, message_id: uuid.UUID | None, catalog: domain.Catalog
) -> Tracked | None:
    """The person asked for no more marketing email: consent is withdrawn, every marketing
    sequence ends, ``lead.unsubscribed`` is published once (a second click changes nothing).
    Transactional email (invoices, payments) still goes."""
    contact = await tx.session.get(Contact, lead_id)
    if contact is None:
        return None
    message = await tx.session.get(Message, message_id) if message_id else None
    if message is not None and message.lead_id != lead_id:
        message = None
    first = contact.unsubscribed_at is None or contact.consent_marketing
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
        ending = [
            e for e in await _active(tx, lead_id)
            if (seq := catalog.sequences.get(e.sequence)) is None or seq.marketing or "lead.unsubscribed" in seq.exit_on
        ]
        await _end(tx, ending, reason="lead.unsubscribed")
        await tx.session.execute(
            update(S)
            .where(S.lead_id == lead_id, S.status == domain.PENDING, S.category == "marketing")
            .values(status=domain.CANCELLED, reason="lead.unsubscribed", claimed_until=None)
        )
    return Tracked(message.sequence if message else "", message.step if message else -1, first)


async def record_bounce(
    tx: UnitOfWork,
    *,
    message_id: uuid.UUID | None,
    address: str | None,
    hard: bool,
    reason: str | None,
    catalog: domain.Catalog,
) -> Tracked:
    """A bounce report (``email.bounced``): a hard bounce stops all email to that address;
    sequences with ``bounce`` among their exits end."""
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
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type="email.bounced")
    return Tracked(message.sequence if message else "", message.step if message else -1, True)


async def record_send_bounce(tx: UnitOfWork, step: Outgoing, *, reason: str, catalog: domain.Catalog) -> bool:
    """The SMTP server refused the address for good: the step closes as bounced, no retry."""
    done = await tx.session.execute(
        update(S)
        .where(S.id == step.id, S.status == domain.PENDING)
        .values(status=domain.SUPPRESSED, reason="bounced", claimed_until=None, last_error=reason[:2000])
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        return False
    contact = await tx.session.get(Contact, step.lead_id)
    if contact is not None:
        contact.bounced_at = contact.bounced_at or tx.now()
    tx.emit("email.bounced", ev.EmailBounced(message_id=step.id, hard=True, reason=reason[:500]), lead_id=step.lead_id)
    await end_enrollments(tx, catalog=catalog, lead_id=step.lead_id, event_type="email.bounced")
    await _finish_if_done(tx, step.lead_id, step.enrollment_id)
    return True


@dataclass(frozen=True)
class ReplyOutcome:
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
    catalog: domain.Catalog,
    threshold: int,
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
        id=uuid.uuid4(), lead_id=None, matched_by=None, message_id=message.message_id if message else None,
        from_address=from_address, subject=subject, text=text, received_at=tx.now(),
    )
    tx.session.add(reply)
    if lead_id is None:
        return ReplyOutcome(reply, False, None)
    return await _reply_from(tx, reply, lead_id, matched_by=matched_by or "person", message=message,
                             catalog=catalog, threshold=threshold)


async def match_reply(
    tx: UnitOfWork, reply_id: uuid.UUID, *, lead_id: uuid.UUID, catalog: domain.Catalog, threshold: int
) -> ReplyOutcome:
    """A person says whose an unmatched e-mail is: it becomes that person's reply."""
    reply = await tx.session.get(Reply, reply_id)
    if reply is None:
        raise NotFound(f"no reply {reply_id}")
    if reply.lead_id is not None:
        if reply.lead_id == lead_id:
            return ReplyOutcome(reply, False, None)
        raise Conflict(f"reply {reply_id} is already matched to {reply.lead_id}")
    return await _reply_from(tx, reply, lead_id, matched_by="person", message=None, catalog=catalog, threshold=threshold)


async def _reply_from(
    tx: UnitOfWork, reply: Reply, lead_id: uuid.UUID, *, matched_by: str, message: Message | None,
    catalog: domain.Catalog, threshold: int,
) -> ReplyOutcome:
    """What a person's reply does: sequences that exit on a reply end, a human takeover starts
    by itself (a person who writes gets a person), and a high-value person's reply is a task."""
    contact = await get_contact(tx, lead_id)
    now = tx.now()
    reply.lead_id, reply.matched_by = lead_id, matched_by
    if message is not None:
        message.replied_at = message.replied_at or now
    _engage(tx, contact, "reply", threshold=threshold)
    await end_enrollments(tx, catalog=catalog, lead_id=lead_id, event_type=domain.REPLY)
    started = False
    if await active_takeover(tx, lead_id) is None:
        await start_takeover(tx, lead_id, by="inbound-reply", reason="the person replied", catalog=catalog)
        started = True
    task = None
    if domain.is_high_value(tier=contact.tier, segment=contact.segment, sales_ready=contact.sales_ready_at is not None):
        task = await add_task(
            tx, lead_id=lead_id, kind="reply", source=f"reply:{reply.id}",
            title=f"Answer {contact.name or 'a high-value contact'} personally today",
            detail=(reply.subject or "")[:300] or None,
        )
    return ReplyOutcome(reply, started, task)


async def list_replies(tx: UnitOfWork, *, status: str, lead_id: uuid.UUID | None, limit: int) -> list[Reply]:
    query = select(Reply).order_by(Reply.received_at.desc(), Reply.id).limit(limit)
    if status == "unmatched":
        query = query.where(Reply.lead_id.is_(None))
    elif status == "matched":
        query = query.where(Reply.lead_id.is_not(None))
    if lead_id is not None:
        query = query.where(Reply.lead_id == lead_id)
    return list(await tx.session.scalars(query))


# --------------------------------------------------------------------------- feedback and tasks


async def record_feedback(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    survey: str,
    score: int | None,
    comment: str | None,
    message_id: uuid.UUID | None,
    threshold: int,
) -> tuple[Feedback, bool]:
    """An answer to a one-question survey (``feedback.received``), once per person and survey:
    a later answer replaces the earlier one (``replaces``), and the same answer again changes
    nothing. A complaint is flagged and counted, stored and published like any other answer,
    and a person is asked to follow up (once per person and survey). Returns the answer and
    whether it replaced an earlier one."""
    contact = await get_contact(tx, lead_id)
    complaint = domain.is_complaint(score, comment)
    feedback = await feedback_of(tx, lead_id=lead_id, survey=survey)
    replaced = feedback is not None
    if feedback is None:
        feedback = Feedback(
            id=uuid.uuid4(), lead_id=lead_id, survey=survey, score=score, comment=comment, complaint=complaint,
            message_id=message_id, received_at=tx.now(),
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
        # A replacement raises a complaint only if the earlier answer was none (counted once).
        ev.FeedbackReceived(survey=survey, score=score, comment=comment, complaint=complaint and not was_complaint,
                            replaces=replaced),
        lead_id=lead_id,
    )
    if contact.erased_at is None and not replaced:
        _engage(tx, contact, "feedback", threshold=threshold)
    if complaint:
        await add_task(
            tx, lead_id=lead_id, kind="complaint", source=f"feedback:{lead_id}:{survey}",
            title="Complaint: call back and thank them for telling us",
            detail=f"{survey}: score {score if score is not None else '-'}; {comment or ''}".strip()[:2000],
        )
    return feedback, replaced


async def feedback_of(tx: UnitOfWork, *, lead_id: uuid.UUID, survey: str) -> Feedback | None:
    """The person's answer to ``survey``, if any."""
    return await tx.session.scalar(
        select(Feedback).where(Feedback.lead_id == lead_id, Feedback.survey == survey).order_by(Feedback.received_at).limit(1)
    )


async def add_task(
    tx: UnitOfWork, *, lead_id: uuid.UUID, kind: str, source: str, title: str, detail: str | None
) -> Task | None:
    """A task for a person, once per source."""
    if await tx.session.scalar(select(Task.id).where(Task.source == source)) is not None:
        return None
    task = Task(
        id=uuid.uuid4(), lead_id=lead_id, kind=kind, title=title[:300], detail=detail, status="open",
        source=source[:200], created_at=tx.now(),
    )
    tx.session.add(task)
    return task


async def _task_for_churn_risk(tx: UnitOfWork, contact: Contact, event: ev.Envelope, payload: Any) -> None:
    reasons = ", ".join(getattr(payload, "reasons", []) or []) or "health fell"
    await add_task(
        tx, lead_id=contact.lead_id, kind="churn_risk", source=f"churn_risk:{event.event_id}",
        title=f"Founder check-in with {contact.name or 'this client'}: can we help?",
        detail=f"churn risk: {reasons}",
    )


async def list_tasks(tx: UnitOfWork, *, status: str | None, lead_id: uuid.UUID | None, limit: int) -> list[Task]:
    query = select(Task).order_by(Task.created_at.desc(), Task.id).limit(limit)
    if status:
        query = query.where(Task.status == status)
    if lead_id:
        query = query.where(Task.lead_id == lead_id)
    return list(await tx.session.scalars(query))


async def close_task(tx: UnitOfWork, task_id: uuid.UUID) -> Task:
    task = await tx.session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    task.status = "done"
    return task

"""The sales department at work: who owns a lead, speed to lead, activities, the hand-off.

- A new lead is assigned as it is captured (``domain.assignment``: language, the rules an admin
  set, then round-robin weighted by capacity) and gets its first-touch deadline, counted in
  business hours in the lead's own zone on the business clock (``LEADS_SALES_*``).
- A person logging a call, meeting or e-mail is the first touch; a next step becomes a task.
- A scheduled pass escalates every untouched lead past its deadline to an admin and reminds a
  tender's owner before its submission deadline (``services.leads.speed``).
- A disabled person's open leads go back to the pool and are assigned again.
- A won deal hands the client to an account owner (role ``success``) with a hand-off task.

Tasks are raised as ``task.raised`` events; nurture keeps every task (``GET /tasks``).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, func, select

from services.leads.context import Context
from services.leads.domain.assignment import (
    OWNER_ROLES,
    AssignmentRules,
    LeadFacts,
    Rep,
    choose,
    least_loaded,
    may_own,
)
from services.leads.record import get_lead
from services.leads.store import Lead, SalesActivity, SalesDocument, SalesRep
from services.leads.timeline import log_activity
from shared import events as ev
from shared.db import AccessPerson
from shared.errors import Conflict, Invalid
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork
from shared.zones import zone

OPEN_STAGES = ("awareness", "interest", "consideration", "decision")
TOUCHING_KINDS = ("call", "meeting", "email")  # a note is for the team, not a touch
TASKS = uuid.UUID("6f1c2b1e-3c55-4a8e-9a53-2d1f0a7c5e10")  # namespace of task ids (from their source)
_TEAM = "sales.team"
_RULES = "sales.rules"


def task_id(source: str) -> uuid.UUID:
    """A task's id from what raised it: raising it again names the same task."""
    return uuid.uuid5(TASKS, source)


def raise_task(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    kind: ev.TaskKind,
    title: str,
    source: str,
    owner_id: uuid.UUID | None,
    due_at: datetime,
    detail: str | None = None,
) -> uuid.UUID:
    """Say ``task.raised``: nurture files it on ``owner_id``'s list."""
    task = task_id(source)
    tx.emit(
        "task.raised",
        ev.TaskRaised(
            task_id=task, kind=kind, title=title[:300], detail=detail, owner_id=owner_id, due_at=due_at, source=source
        ),
        lead_id=lead_id,
    )
    return task


# --------------------------------------------------------------------------- the team


async def rules_in_force(tx: UnitOfWork, ctx: Context | None = None) -> AssignmentRules:
    """The newest assignment rule book (none set: language, then round-robin). With ``ctx``,
    one read in the last moments serves (``Context.rules``; ``team.put_rules`` drops it)."""
    if _RULES not in tx.memo and ctx is not None and (recent := ctx.rules.get()) is not None:
        tx.memo[_RULES] = recent
    if _RULES not in tx.memo:
        row = await tx.session.scalar(
            select(SalesDocument)
            .where(SalesDocument.kind == "assignment_rules")
            .order_by(SalesDocument.id.desc())
            .limit(1)
        )
        tx.memo[_RULES] = AssignmentRules() if row is None else AssignmentRules.model_validate(row.document)
        if ctx is not None:
            ctx.rules.keep(tx.memo[_RULES])
    rules: AssignmentRules = tx.memo[_RULES]
    return rules


@functools.cache
def _team_query() -> Select[AccessPerson, SalesRep, int | None, int | None]:
    """One statement a transaction: the people with their capacities and what each owns (open
    leads, or a success person's accounts), counted in subqueries joined to each person. It
    has no parameters: built once, its cache key too (building it was a visible share of a
    ``POST /leads``'s CPU)."""
    live = (Lead.merged_into.is_(None), Lead.erased_at.is_(None))
    leads_owned = (
        select(Lead.owner_id.label("person_id"), func.count().label("n"))
        .where(Lead.owner_id.is_not(None), Lead.stage.in_(OPEN_STAGES), *live)
        .group_by(Lead.owner_id)
        .subquery()
    )
    accounts_owned = (
        select(Lead.account_owner_id.label("person_id"), func.count().label("n"))
        .where(Lead.account_owner_id.is_not(None), *live)
        .group_by(Lead.account_owner_id)
        .subquery()
    )
    return (
        select(AccessPerson, SalesRep, leads_owned.c.n, accounts_owned.c.n)
        .outerjoin(SalesRep, SalesRep.person_id == AccessPerson.id)
        .outerjoin(leads_owned, leads_owned.c.person_id == AccessPerson.id)
        .outerjoin(accounts_owned, accounts_owned.c.person_id == AccessPerson.id)
        .where(AccessPerson.role.in_(OWNER_ROLES), AccessPerson.kind == "person")
    )


async def team(tx: UnitOfWork) -> dict[uuid.UUID, Rep]:
    """Everyone who may own leads or clients, with capacity and open leads: read once per
    transaction (a CSV import assigns hundreds of leads in one) and kept current as it assigns."""
    if _TEAM in tx.memo:
        known: dict[uuid.UUID, Rep] = tx.memo[_TEAM]
        return known
    people = (await tx.session.execute(_team_query())).all()
    known = {}
    for p, rep, leads_n, accounts_n in people:
        known[p.id] = Rep(
            person_id=p.id,
            role=p.role,
            active=p.active,
            languages=tuple(p.languages or ()),
            capacity=rep.capacity if rep is not None else 1,
            open_leads=(accounts_n if p.role == "success" else leads_n) or 0,
            last_assigned_at=rep.last_assigned_at if rep is not None else None,
            email=p.email,
        )
    tx.memo[_TEAM] = known
    return known


def forget_team(tx: UnitOfWork) -> None:
    """Whoever changes people, capacities or rules in a transaction drops what it read."""
    tx.memo.pop(_TEAM, None)
    tx.memo.pop(_RULES, None)


async def _took_one(tx: UnitOfWork, person_id: uuid.UUID, *, delta: int = 1) -> None:
    known = await team(tx)
    rep = known.get(person_id)
    now = tx.now()
    if rep is not None:
        known[person_id] = replace(rep, open_leads=rep.open_leads + delta, last_assigned_at=now)
    if delta > 0:
        row = await tx.session.get(SalesRep, person_id)
        if row is None:
            tx.session.add(SalesRep(person_id=person_id, capacity=1, last_assigned_at=now, updated_at=now))
        else:
            row.last_assigned_at = now


async def admin_on_duty(tx: UnitOfWork) -> uuid.UUID | None:
    """Who an escalation goes to: the active admin person with the fewest open leads of their
    own (a sales manager who also sells takes fewer), then by id; none if there is no admin."""
    admins = [r for r in (await team(tx)).values() if r.role == "admin" and r.active]
    return min(admins, key=lambda r: (r.open_leads, str(r.person_id))).person_id if admins else None


# --------------------------------------------------------------------------- owners


@dataclass(frozen=True)
class Assignment:
    owner_id: uuid.UUID | None
    reason: str


async def assign_new(tx: UnitOfWork, ctx: Context, lead: Lead) -> Assignment:
    """Choose the owner of a lead being captured and start its first-touch clock (both travel in
    ``lead.captured``, which the caller emits)."""

    now = tx.now()
    policy = ctx.settings.sales
    lead.first_touch_due_at = policy.business_hours().add(now, policy.first_touch_hours, zone(lead.timezone))
    # The team and the rules are read without flushing the lead first (it owns nothing yet), so
    # it is inserted once with its owner and clock rather than inserted, then updated.
    with tx.session.no_autoflush:
        people, rules = await team(tx), await rules_in_force(tx, ctx)
    choice = choose(
        LeadFacts(channel=lead.channel, country=lead.country, language=lead.language), people.values(), rules
    )
    if choice.person_id is not None:
        lead.owner_id, lead.assigned_at = choice.person_id, now
        await _took_one(tx, choice.person_id)
    return Assignment(choice.person_id, choice.reason)


def announce(
    tx: UnitOfWork,
    lead: Lead,
    assignment: Assignment,
    *,
    previous: uuid.UUID | None = None,
    role: Literal["lead", "account"] = "lead",
) -> None:
    """Say ``lead.assigned`` and keep it on the lead's timeline."""
    tx.emit(
        "lead.assigned",
        ev.LeadAssigned(
            owner_id=assignment.owner_id,
            previous_owner_id=previous,
            role=role,
            reason=assignment.reason,
            first_touch_due_at=lead.first_touch_due_at if role == "lead" and lead.first_touched_at is None else None,
        ),
        lead_id=lead.id,
    )
    log_activity(tx, lead.id, "lead.assigned", owner_id=assignment.owner_id, role=role, reason=assignment.reason)


async def check_owner(tx: UnitOfWork, owner_id: uuid.UUID) -> AccessPerson:
    """The person who may own a lead, or a 4xx naming the field."""
    person = await tx.session.get(AccessPerson, owner_id)
    if person is None or person.kind != "person":
        raise Invalid(f"owner_id: no person {owner_id}")
    why = may_own(person.role, person.active)
    if why is not None:
        raise Invalid(f"owner_id: {person.email} {why}")
    return person


async def set_owner(tx: UnitOfWork, lead_id: uuid.UUID, owner_id: uuid.UUID | None) -> Lead:
    """Give a lead to a person by hand (``PUT /leads/{lead_id}/owner``), or back to the pool."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None or lead.merged_into is not None:
        raise Conflict(f"lead {lead_id} was {'erased' if lead.erased_at else 'merged'}; it has no owner")
    if owner_id is not None:
        await check_owner(tx, owner_id)
    if lead.owner_id == owner_id:
        return lead
    previous = lead.owner_id
    lead.owner_id, lead.assigned_at, lead.updated_at = owner_id, tx.now() if owner_id else None, tx.now()
    if previous is not None:
        await _took_one(tx, previous, delta=-1)
    if owner_id is not None:
        await _took_one(tx, owner_id)
    announce(tx, lead, Assignment(owner_id, "by hand" if owner_id else "back to the pool by hand"), previous=previous)
    return lead


async def release_owned_by(tx: UnitOfWork, ctx: Context, person_id: uuid.UUID) -> int:
    """A disabled person's open leads go back to the pool and are assigned again by the rules
    (their clients go to another account owner). Returns how many moved."""
    forget_team(tx)
    leads = list(
        await tx.session.scalars(
            select(Lead)
            .where(
                Lead.owner_id == person_id,
                Lead.stage.in_(OPEN_STAGES),
                Lead.merged_into.is_(None),
                Lead.erased_at.is_(None),
            )
            .order_by(Lead.created_at)
        )
    )
    for lead in leads:
        choice = choose(
            LeadFacts(channel=lead.channel, country=lead.country, language=lead.language),
            [r for r in (await team(tx)).values() if r.person_id != person_id],
            await rules_in_force(tx, ctx),
        )
        lead.owner_id, lead.assigned_at = choice.person_id, tx.now() if choice.person_id else None
        if choice.person_id is not None:
            await _took_one(tx, choice.person_id)
        announce(
            tx, lead, Assignment(choice.person_id, f"previous owner disabled; {choice.reason}"), previous=person_id
        )
    clients = list(await tx.session.scalars(select(Lead).where(Lead.account_owner_id == person_id)))
    for lead in clients:
        await hand_off(tx, ctx, lead, exclude=person_id, reason="previous account owner disabled")
    return len(leads) + len(clients)


# --------------------------------------------------------------------------- activities


@dataclass(frozen=True)
class ActivityIn:
    kind: Literal["call", "meeting", "email", "note"]
    outcome: str | None
    next_step: str | None
    due_at: datetime | None


async def log_sales_activity(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, data: ActivityIn, *, by_id: uuid.UUID | None
) -> SalesActivity:
    """Record a call, meeting, e-mail or note (``lead.activity_logged``). The first call,
    meeting or e-mail is the lead's first touch (an escalation raised for it is closed); a next
    step becomes a task for whoever logged it (or the lead's owner), due when they said."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        raise Conflict(f"lead {lead_id} was erased")
    now = tx.now()
    if data.due_at is not None and data.next_step is None:
        raise Invalid("due_at: a due date belongs to a next_step; give one")
    activity = SalesActivity(
        id=time_ordered_id(),
        lead_id=lead.id,
        kind=data.kind,
        outcome=data.outcome,
        next_step=data.next_step,
        due_at=data.due_at,
        by_id=by_id,
        at=now,
    )
    tx.session.add(activity)
    first = data.kind in TOUCHING_KINDS and lead.first_touched_at is None
    if first:
        lead.first_touched_at = now
        if lead.escalated_at is not None:
            tx.emit(
                "task.closed",
                ev.TaskClosed(task_id=task_id(f"first_touch:{lead.id}"), reason=f"reached by {data.kind}"),
                lead_id=lead.id,
            )
    lead.updated_at = now
    tx.emit(
        "lead.activity_logged",
        ev.LeadActivityLogged(
            activity_id=activity.id, kind=data.kind, outcome=data.outcome, by_id=by_id, first_touch=first
        ),
        lead_id=lead.id,
    )
    log_activity(tx, lead.id, f"activity.{data.kind}", outcome=data.outcome, next_step=data.next_step, by=by_id)
    if data.next_step:
        policy = ctx.settings.sales
        due = data.due_at or policy.business_hours().add(now, policy.next_step_due_hours, zone(lead.timezone))
        raise_task(
            tx,
            lead_id=lead.id,
            kind="next_step",
            title=f"{lead.name or lead.email or lead.id}: {data.next_step}"[:300],
            source=f"next_step:{activity.id}",
            owner_id=by_id or lead.owner_id,
            due_at=due,
        )
    return activity


async def activities_of(tx: UnitOfWork, lead_id: uuid.UUID) -> list[SalesActivity]:
    await get_lead(tx, lead_id)
    rows = await tx.session.scalars(
        select(SalesActivity).where(SalesActivity.lead_id == lead_id).order_by(SalesActivity.at, SalesActivity.id)
    )
    return list(rows)


# --------------------------------------------------------------------------- the hand-off


async def hand_off(
    tx: UnitOfWork, ctx: Context, lead: Lead, *, exclude: uuid.UUID | None = None, reason: str = "deal won"
) -> uuid.UUID | None:
    """The client goes to the account owner (role ``success``) with the fewest clients per unit
    of capacity, who gets a hand-off task; none if nobody is in success."""
    candidates = [r for r in (await team(tx)).values() if r.role == "success" and r.active and r.capacity > 0]
    candidates = [r for r in candidates if r.person_id != exclude]
    if lead.account_owner_id is not None and lead.account_owner_id != exclude:
        return lead.account_owner_id  # a repeat deal keeps its account owner
    previous = lead.account_owner_id
    chosen = least_loaded(candidates).person_id if candidates else None
    lead.account_owner_id = chosen
    if chosen is not None:
        await _took_one(tx, chosen)
    announce(
        tx,
        lead,
        Assignment(chosen, reason if chosen else f"{reason}; nobody in success"),
        previous=previous,
        role="account",
    )
    if chosen is not None:
        policy = ctx.settings.sales
        raise_task(
            tx,
            lead_id=lead.id,
            kind="handoff",
            title=f"New client {lead.name or lead.company or lead.id}: introduce yourself and take over from sales",
            source=f"handoff:{lead.id}:{chosen}",
            owner_id=chosen,
            due_at=policy.business_hours().add(tx.now(), policy.handoff_due_hours, zone(lead.timezone)),
            detail=f"Handed over by {lead.owner_id}" if lead.owner_id else None,
        )
    return chosen

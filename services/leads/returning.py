"""Returning clients the agency once let go (docs/design.md, "Ending a relationship on the
agency's side"): ``client.terminated`` marks the person and their company; a new lead later
captured from the same e-mail, company domain or company name gets the ``terminated_before``
red flag (the earlier lead, the reason and the date as evidence) and the surcharge
(``LEADS_RETURNING_SURCHARGE``), which every estimate written for them carries as a scope line.
The rules are in domain/returning.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select

from services.leads.commands import DealIn, LeadIn, ScopeLineIn
from services.leads.context import Context
from services.leads.domain import returning as rules
from services.leads.domain.red_flags import RedFlag
from services.leads.funnel import move_stage
from services.leads.record import lead_for_event
from services.leads.store import Lead, TerminatedClient
from services.leads.timeline import log_activity
from shared import events as ev
from shared.uow import UnitOfWork, UnitOfWorkFactory

# The clients the agency let go, per database, in memory: a capture checks them with no query (a
# batch of captures reads a handful of statements, tests/unit/test_leads_batching.py). Loaded at
# start and every REFRESH_S (what another instance recorded), added to as this one records them.
REFRESH_S = 30.0
_KNOWN: WeakKeyDictionary[Any, list[rules.Terminated]] = WeakKeyDictionary()


def _terminated(row: TerminatedClient) -> rules.Terminated:
    return rules.Terminated(
        lead_id=row.lead_id,
        identity=rules.Identity(email=row.email_hash, domain=row.domain, company=row.company),
        reason=row.reason,
        terminated_at=row.terminated_at,
    )


async def refresh(uow: UnitOfWorkFactory) -> int:
    """Scheduled: read every client the agency let go into memory. Returns how many."""
    async with uow.sessions() as session:
        rows = [_terminated(r) for r in await session.scalars(select(TerminatedClient))]
        _KNOWN[session.get_bind()] = rows
    return len(rows)


async def client_terminated(tx: UnitOfWork, event: ev.Envelope, terminated: ev.ClientTerminated) -> None:
    """Remember the person and their company as let go by the agency, and end their stage now
    (``churned``: the agency decided it; billing ends what still runs at ``effective_at``)."""
    lead = await lead_for_event(tx, event.lead_id)
    if lead is None or await tx.session.get(TerminatedClient, terminated.termination_id) is not None:
        return
    who = rules.Identity.of(email=lead.email, company=lead.company)
    row = TerminatedClient(
        termination_id=terminated.termination_id,
        lead_id=lead.id,
        email_hash=who.email,
        domain=lead.company_domain or who.domain,
        company=who.company,
        reason=terminated.reason,
        terminated_at=event.occurred_at,
    )
    tx.session.add(row)
    known, remembered = tx.session.get_bind(), _terminated(row)
    tx.after_commit(lambda: _KNOWN.setdefault(known, []).append(remembered))
    log_activity(
        tx,
        lead.id,
        "client.terminated",
        reason=terminated.reason,
        notice_days=terminated.notice_days,
        effective_at=terminated.effective_at.isoformat(),
    )
    if lead.stage != "churned":
        await move_stage(tx, lead, to_stage="churned", cause="client.terminated")


async def flag_returning(
    tx: UnitOfWork, ctx: Context, data: LeadIn, flags: list[RedFlag]
) -> tuple[list[RedFlag], Decimal | None]:
    """At capture: a new lead who is (or is from the company of) a client the agency let go
    gets ``terminated_before`` with its evidence, and the surcharge multiplier."""
    who = rules.Identity.of(email=data.email, company=data.company)
    known = _KNOWN.get(tx.session.get_bind()) or []
    found = rules.same_client(who, known)
    if found is None:
        return flags, None
    flag = RedFlag(rules.RED_FLAG, rules.evidence(*found))
    return [*flags, flag], ctx.settings.returning_surcharge


async def apply_surcharge(lead: Lead, data: DealIn) -> DealIn:
    """An estimate for a returning lead: one more scope line, "Returning-client surcharge (xN)",
    of (N - 1) x the lines' total, and a retainer's monthly fee x N. Others are unchanged."""
    if not lead.surcharge or lead.surcharge <= 1:
        return data
    multiplier = Decimal(lead.surcharge)
    lines_total = sum((line.amount for line in data.lines), Decimal(0))
    extra, fee = rules.surcharged(
        lines_total=lines_total, monthly_fee=data.monthly_fee, multiplier=multiplier, currency=data.currency
    )
    lines = list(data.lines)
    if extra > 0:
        lines.append(ScopeLineIn(description=rules.surcharge_text(multiplier), amount=extra))
    return data.model_copy(update={"lines": lines, "monthly_fee": fee})

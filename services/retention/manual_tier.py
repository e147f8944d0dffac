"""A client's tier set by hand: an admin's decision wins over the computed tier until a day
(the rule: ``domain.tiers.effective_tier``).

Setting or removing it is published as ``client.tier_set_manually`` (topic ``retention``:
tier, reason, until, who; no note text), and a change of the tier in force as
``client.tier_changed`` with the reason. The end is checked with the scheduled review: a manual
tier whose ``until`` has come is removed (``client.tier_set_manually`` with no tier, set by the
system) and the computed tier is in force again. ``clientflow replay retention`` rebuilds the
manual tiers from ``client.tier_set_manually`` and the tier in force from ``client.tier_changed``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import select

from services.retention import record
from services.retention.context import Context
from services.retention.domain.tiers import ManualTier, effective_tier
from services.retention.store import Client, ManualTierRow
from shared import events as ev
from shared.access.context import CURRENT_ACTOR
from shared.errors import Conflict, Invalid, NotFound
from shared.uow import UnitOfWork, UnitOfWorkFactory


def as_rule(row: ManualTierRow | None) -> ManualTier | None:
    return None if row is None else ManualTier(tier=row.tier, reason=row.reason, until=row.until, set_by=row.set_by)


async def manual_of(tx: UnitOfWork, lead_id: uuid.UUID) -> ManualTierRow | None:
    return await tx.session.get(ManualTierRow, lead_id)


def _actor_id() -> str | None:
    actor = CURRENT_ACTOR.get()
    return actor.id if actor is not None else None


def _apply(tx: UnitOfWork, client: Client, manual: ManualTierRow | None, now: datetime, *, why: str) -> None:
    """Put the tier in force on the client; a change is published with its reason."""
    computed = client.computed_tier or client.tier
    if computed is None and manual is None:
        return
    kept = [r for r in client.tier_reasons or [] if not r.startswith("set by hand: ")]
    tier, reasons, by_hand = effective_tier(computed or "good", kept, as_rule(manual), now)
    if not by_hand:
        reasons = [why, *reasons]
    put_in_force(tx, client, tier=tier, reasons=reasons, computed=computed, by_hand=by_hand, now=now)
    client.updated_at = now


def put_in_force(
    tx: UnitOfWork,
    client: Client,
    *,
    tier: str,
    reasons: list[str],
    computed: str | None,
    by_hand: bool,
    now: datetime,
) -> bool:
    """Make ``tier`` the client's, with its reasons; a change is published
    (``client.tier_changed``, saying whether a person set it). Returns whether it changed."""
    changed = tier != client.tier
    if changed:
        tx.emit(
            "client.tier_changed",
            ev.ClientTierChanged(
                from_tier=client.tier,
                to_tier=tier,
                reasons=reasons,
                computed_tier=computed,
                manual=by_hand,
            ),
            lead_id=client.lead_id,
        )
        client.tier, client.tier_changed_at = tier, now
    client.tier_reasons = reasons
    return changed


async def set_manual_tier(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, tier: str, reason: str, until: date
) -> ManualTierRow:
    """Set the client's tier by hand until ``until`` (a future day, else 422 naming it)."""
    now = tx.now()
    if until <= now.date():
        raise Invalid(f"until: {until.isoformat()} is not in the future (today is {now.date().isoformat()})")
    if not reason.strip():
        raise Invalid("reason: required")
    client = await record.locked_client(tx, lead_id)
    if client is None:
        raise NotFound(f"no client {lead_id}")
    if client.erased_at is not None:
        raise Conflict(f"client {lead_id} was erased")
    if client.computed_tier is None:
        client.computed_tier = client.tier  # what the rules last gave, kept beside the manual one
    row = await manual_of(tx, lead_id)
    who = _actor_id()
    if row is None:
        row = ManualTierRow(lead_id=lead_id, tier=tier, reason=reason, until=until, set_by=who, set_at=now)
        tx.session.add(row)
    else:
        row.tier, row.reason, row.until, row.set_by, row.set_at = tier, reason, until, who, now
    tx.emit(
        "client.tier_set_manually",
        ev.ClientTierSetManually(tier=tier, reason=reason, until=until, set_by=who),
        lead_id=lead_id,
    )
    _apply(tx, client, row, now, why=f"set by hand: {reason}")
    return row


async def remove_manual_tier(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, by: str | None = None) -> Client:
    """Remove the client's manual tier (404 when there is none): the computed tier is in force."""
    client = await record.locked_client(tx, lead_id)
    row = await manual_of(tx, lead_id)
    if client is None or row is None:
        raise NotFound(f"client {lead_id} has no manual tier")
    await _remove(tx, client, row, by=by or _actor_id(), why="manual tier removed")
    return client


async def _remove(tx: UnitOfWork, client: Client, row: ManualTierRow, *, by: str | None, why: str) -> None:
    await tx.session.delete(row)
    tx.emit(
        "client.tier_set_manually",
        ev.ClientTierSetManually(tier=None, reason=why, until=None, set_by=by),
        lead_id=client.lead_id,
    )
    _apply(tx, client, None, tx.now(), why=why)


async def expire_due(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Scheduled: manual tiers whose ``until`` has come end; the computed tier is in force again
    (``client.tier_changed`` when that changes the tier). Returns how many ended."""
    async with uow() as tx:
        due = list(await tx.session.scalars(select(ManualTierRow).where(ManualTierRow.until <= now.date())))
        for row in due:
            client = await record.locked_client(tx, row.lead_id)
            if client is None:
                await tx.session.delete(row)
                continue
            await _remove(tx, client, row, by=ctx.settings.service_name, why=f"manual tier ended ({row.until})")
    return len(due)


async def replay_manual(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.ClientTierSetManually) -> None:
    """Rebuild: the manual tier as set (or removed) then; its event is the record of it."""
    await record.client(tx, lead_id)
    row = await manual_of(tx, lead_id)
    if p.tier is None or p.until is None:  # removed (a set without a day would never end)
        if row is not None:
            await tx.session.delete(row)
        return
    at = record.when(tx)
    if row is None:
        tx.session.add(
            ManualTierRow(
                lead_id=lead_id, tier=p.tier, reason=p.reason or "", until=p.until, set_by=p.set_by, set_at=at
            )
        )
    else:
        row.tier, row.reason, row.until, row.set_by, row.set_at = p.tier, p.reason or "", p.until, p.set_by, at


async def erase_reason(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """An erased person: the manual tier's reason is free text and goes; the tier stays."""
    row = await manual_of(tx, lead_id)
    if row is not None:
        row.reason = "(erased)"
    client = await record.locked_client(tx, lead_id)
    if client is not None and any(r.startswith("set by hand: ") for r in client.tier_reasons or []):
        client.tier_reasons = ["set by hand: (erased)"]

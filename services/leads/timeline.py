"""A lead's timeline: every event about the person (``activity``), their stage history and
each time they reached us (``touches``)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from services.leads.store import Activity, StageChange, Touch
from shared.uow import UnitOfWork


def log_activity(tx: UnitOfWork, lead_id: uuid.UUID, kind: str, **detail: Any) -> None:
    """One entry of the lead's timeline (``detail``'s None values are left out)."""
    clean = {
        k: (str(v) if isinstance(v, uuid.UUID | Decimal | date) else v) for k, v in detail.items() if v is not None
    }
    tx.session.add(Activity(lead_id=lead_id, type=kind, at=tx.now(), detail=clean))


async def activity(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Activity]:
    """Every event about the lead, oldest first."""
    rows = await tx.session.scalars(select(Activity).where(Activity.lead_id == lead_id).order_by(Activity.id))
    return list(rows)


async def stage_history(tx: UnitOfWork, lead_id: uuid.UUID) -> list[StageChange]:
    """The lead's stage changes, oldest first."""
    rows = await tx.session.scalars(select(StageChange).where(StageChange.lead_id == lead_id).order_by(StageChange.id))
    return list(rows)


async def touches(tx: UnitOfWork, lead_id: uuid.UUID) -> list[Touch]:
    """Each time the person (or a colleague matched to them) reached us, oldest first."""
    rows = await tx.session.scalars(select(Touch).where(Touch.lead_id == lead_id).order_by(Touch.id))
    return list(rows)

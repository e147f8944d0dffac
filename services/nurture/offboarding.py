"""Offboarding: the agency ended the relationship (``client.terminated``). Every marketing
enrollment of the person ends (no more nurture, win-back or newsletters to someone the agency
let go) and the ``offboarding`` sequence (sequences/offboarding.yaml) starts: the notice at
once, a reminder with the handover checklist a few days before ``effective_at``, in the
person's language. It is transactional: sent without marketing consent, never to an erased
person, and held by a human takeover like every automated mail (the existing rule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.nurture import domain, enrollment
from services.nurture.catalog import current_catalog
from services.nurture.metrics import NurtureMetrics
from services.nurture.record import active_enrollments, known_contact
from shared.events import Envelope
from shared.uow import UnitOfWork

REASON = "client.terminated"


async def client_terminated(
    tx: UnitOfWork,
    *,
    builtin: domain.Catalog,
    event: Envelope,
    payload: Any,
    metrics: NurtureMetrics,
    task_policy: domain.TaskPolicy,
    on_scheduled: Callable[[], None] | None = None,
) -> None:
    """End the person's marketing enrollments, then handle the event as any other (the
    ``offboarding`` sequence it triggers starts)."""
    if event.lead_id is not None:
        contact = await known_contact(tx, event.lead_id)
        if contact is None or contact.erased_at is None:
            catalog = await current_catalog(tx, builtin)
            marketing = [
                e
                for e in await active_enrollments(tx, event.lead_id)
                if (sequence := catalog.sequences.get(e.sequence)) is None or sequence.marketing
            ]
            await enrollment.end_each(tx, marketing, reason=REASON)
    await enrollment.on_event(
        tx,
        builtin=builtin,
        event=event,
        payload=payload,
        metrics=metrics,
        task_policy=task_policy,
        on_scheduled=on_scheduled,
    )

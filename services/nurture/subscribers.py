"""Nurture's subscriber: translate an event into one use case."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from services.nurture import consent, content, domain, enrollment, erasure, export, offboarding, record, tasks
from services.nurture.metrics import NurtureMetrics
from shared.consumer import Handler
from shared.events import Envelope, ExportRequested, LeadCaptured, TaskClosed, TaskRaised
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def register(
    runtime: ServiceRuntime,
    *,
    catalog: domain.Catalog,
    metrics: NurtureMetrics,
    task_policy: domain.TaskPolicy,
    wake_sender: Callable[[], None],
    forget_mail: Callable[[list[uuid.UUID]], None] | None = None,
    consent_wording: str = "2026-01",
    confirm_url: Callable[[uuid.UUID], str] | None = None,
    read_mail: export.ReadMail | None = None,
    mail_from: str = "Clientflow <hello@clientflow.example>",
) -> None:
    """Consume every event type of the topics nurture reads, each into one use case: an
    erasure into ``erasure.erase_person``, a task raised or closed elsewhere into
    ``tasks.file_raised`` or ``tasks.close_raised``, anything else into ``enrollment.on_event``."""

    async def happened(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        await enrollment.on_event(
            tx,
            builtin=catalog,
            event=event,
            payload=payload,
            metrics=metrics,
            task_policy=task_policy,
            on_scheduled=wake_sender,
        )

    async def terminated(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        await offboarding.client_terminated(
            tx,
            builtin=catalog,
            event=event,
            payload=payload,
            metrics=metrics,
            task_policy=task_policy,
            on_scheduled=wake_sender,
        )

    async def captured(tx: UnitOfWork, event: Envelope, payload: LeadCaptured) -> None:
        # Consent kept honest: a grant, or after an unsubscribe a request to confirm (consent.py).
        before = await consent.prior(tx, event.lead_id)
        await happened(tx, event, payload)
        await consent.after_capture(
            tx,
            event=event,
            payload=payload,
            before=before,
            default_wording=consent_wording,
            confirm_url=confirm_url or (lambda request_id: f"/consent/confirm?request={request_id}"),
            on_scheduled=wake_sender,
        )

    async def erased(tx: UnitOfWork, event: Envelope, payload: Any) -> None:
        await erasure.erase_person(tx, event.lead_id, on_erased=forget_mail)

    async def task_raised(tx: UnitOfWork, event: Envelope, payload: TaskRaised) -> None:
        await tasks.file_raised(tx, event, payload, metrics=metrics)

    async def task_closed(tx: UnitOfWork, event: Envelope, payload: TaskClosed) -> None:
        await tasks.close_raised(tx, payload)

    async def export_requested(tx: UnitOfWork, event: Envelope, payload: ExportRequested) -> None:
        if event.lead_id is not None and not event.shredded:
            await export.export_person(
                tx, export_id=payload.export_id, lead_id=event.lead_id, sender=mail_from, read_mail=read_mail
            )

    async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
        await record.prefetch(tx, events, builtin=catalog)

    # Every event type of the topics nurture reads: any may trigger or end a sequence written
    # through the API later, and several keep the person's profile (stage, tier, owners) current.
    consumed: dict[str, Handler] = dict.fromkeys(sorted(content.triggers()), happened)
    consumed["lead.erased"] = erased
    consumed["lead.captured"] = captured
    # The agency ended the relationship: marketing stops, offboarding starts.
    consumed["client.terminated"] = terminated
    # The tasks topic (not a trigger of sequences): nurture keeps every task, whoever raised it.
    consumed["task.raised"] = task_raised
    consumed["task.closed"] = task_closed
    # An export of the person's data (leads asks, nurture answers with its part).
    consumed["export.requested"] = export_requested
    runtime.consume(consumed, prefetch=prefetch)

"""Exports on request (right of access and portability): everything the four services hold about
one person, gathered over the wire into one JSON document and a zip of the e-mails sent.

An admin asks (``request_export``): leads writes its own part at once and publishes
``export.requested``; nurture, billing and retention each answer with their part in
``export.part`` chunks (``receive_part``). The export is complete once every service's chunks
are in; it is kept ``LEADS_EXPORT_RETENTION_DAYS`` for its download, then purged
(``purge_expired``), and goes at once with its person on erasure (``forget_exports``).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select

from services.leads import deals, timeline
from services.leads.context import Context
from services.leads.record import get_lead, load_lead
from services.leads.store import (
    Account,
    ChangeRequest,
    ClientPayment,
    EstimateVersion,
    Export,
    ExportChunk,
    Lead,
    LeadRedFlag,
    Merge,
    PendingDeposit,
    SalesActivity,
    TerminatedClient,
)
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.exports import FORMAT, FORMAT_VERSION, SERVICES, assemble, audit_rows, jsonable, row, rows, split
from shared.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

PENDING, DONE = "pending", "done"


@dataclass(frozen=True)
class ExportState:
    """An export with each service's progress (``pending`` until all its chunks are in)."""

    export: Export
    services: dict[str, str]

    @property
    def complete(self) -> bool:
        return self.export.completed_at is not None

    @property
    def pending(self) -> list[str]:
        return [name for name, state in self.services.items() if state != DONE]

    @property
    def progress(self) -> str:
        return f"{len(self.services) - len(self.pending)}/{len(self.services)}"


async def request_export(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, requested_by: ev.Actor) -> ExportState:
    """Start gathering what every service holds about the person: leads' own part now, the
    others' when they answer ``export.requested``. An erased person has nothing left: 404."""
    lead = await get_lead(tx, lead_id)
    if lead.erased_at is not None:
        raise NotFound(f"lead {lead_id} was erased: nothing is kept about them to export")
    now = tx.now()
    export = Export(
        id=uuid.uuid4(),
        lead_id=lead.id,
        requested_by=requested_by.model_dump(mode="json"),
        requested_at=now,
        completed_at=None,
        expires_at=now + timedelta(days=ctx.settings.export_retention_days),
    )
    tx.session.add(export)
    own = {"service": "leads", "gathered_at": now.isoformat(), **await leads_part(tx, lead)}
    pieces = split(own)
    for number, (sections, _mail) in enumerate(pieces, start=1):
        tx.session.add(
            ExportChunk(
                export=export,
                service="leads",
                chunk=number,
                chunks=len(pieces),
                part=sections,
                mail=[],
                received_at=now,
            )
        )
    tx.emit("export.requested", ev.ExportRequested(export_id=export.id, requested_at=now), lead_id=lead.id)
    log.info("export %s of lead %s requested by %s %s", export.id, lead.id, requested_by.kind, requested_by.id)
    return ExportState(export, {name: DONE if name == "leads" else PENDING for name in SERVICES})


async def leads_part(tx: UnitOfWork, lead: Lead) -> dict[str, Any]:
    """What leads holds about the person: the lead with every field, its touches, timeline and
    stage history, red flags, logged activities, deals with every estimate version and change
    request, the company account, merges, payments seen, and the audit trail about them."""
    lead_id = lead.id
    their_deals = []
    for deal in await deals.deals_of(tx, lead_id):
        versions = await tx.session.scalars(
            select(EstimateVersion).where(EstimateVersion.deal_id == deal.id).order_by(EstimateVersion.version)
        )
        requests = await tx.session.scalars(
            select(ChangeRequest).where(ChangeRequest.deal_id == deal.id).order_by(ChangeRequest.created_at)
        )
        their_deals.append({**row(deal), "estimate_versions": rows(versions), "change_requests": rows(requests)})
    account = await tx.session.get(Account, lead.account_id) if lead.account_id is not None else None

    async def of(table: Any, *order: Any) -> list[dict[str, Any]]:
        return rows(await tx.session.scalars(select(table).where(table.lead_id == lead_id).order_by(*order)))

    merges = await tx.session.scalars(
        select(Merge).where(or_(Merge.kept_id == lead_id, Merge.merged_id == lead_id)).order_by(Merge.id)
    )
    return {
        "lead": row(lead),
        "touches": rows(await timeline.touches(tx, lead_id)),
        "stage_history": rows(await timeline.stage_history(tx, lead_id)),
        "activity": rows(await timeline.activity(tx, lead_id)),
        "red_flags": await of(LeadRedFlag, LeadRedFlag.id),
        "sales_activities": await of(SalesActivity, SalesActivity.at),
        "deals": their_deals,
        "account": row(account) if account is not None else None,
        "merges": rows(merges),
        "payments": await of(ClientPayment, ClientPayment.paid_at),
        "pending_deposits": await of(PendingDeposit, PendingDeposit.due_at),
        "terminations": await of(TerminatedClient, TerminatedClient.terminated_at),
        "audit": await audit_rows(tx, lead_id),
    }


async def receive_part(tx: UnitOfWork, ctx: Context, event: ev.Envelope, part: ev.ExportPart) -> None:
    """Keep one chunk of a service's part; the export is complete when every service's chunks
    are in. A part for an export that is gone (purged, or its person erased), for an erased
    person or from an unknown service is dropped: nothing of an erased person is stored again."""
    if event.lead_id is None or event.shredded:
        return
    export = await tx.session.get(Export, part.export_id)
    if export is None or export.lead_id != event.lead_id or export.completed_at is not None:
        return
    if part.service not in SERVICES or part.service == "leads" or part.chunk > part.chunks:
        log.warning(
            "export %s: ignoring a part from %r (chunk %s/%s)", export.id, part.service, part.chunk, part.chunks
        )
        return
    lead = await load_lead(tx, export.lead_id)
    if lead is None or lead.erased_at is not None:
        return
    if await tx.session.get(ExportChunk, (export.id, part.service, part.chunk)) is not None:
        return
    tx.session.add(
        ExportChunk(
            export_id=export.id,
            service=part.service,
            chunk=part.chunk,
            chunks=part.chunks,
            part=part.part,
            mail=[m.model_dump(mode="json") for m in part.mail],
            received_at=tx.now(),
        )
    )
    await tx.session.flush()
    state = await _state(tx, export)
    if not state.pending:
        export.completed_at = tx.now()
        tx.after_commit(lambda: ctx.metrics.exports_completed.inc())
        log.info("export %s of lead %s is complete", export.id, export.lead_id)


async def _state(tx: UnitOfWork, export: Export) -> ExportState:
    received = await tx.session.execute(
        select(ExportChunk.service, func.count(), func.max(ExportChunk.chunks))
        .where(ExportChunk.export_id == export.id)
        .group_by(ExportChunk.service)
    )
    done = {service for service, count, chunks in received.all() if count >= chunks}
    return ExportState(export, {name: DONE if name in done else PENDING for name in SERVICES})


async def export_state(tx: UnitOfWork, ctx: Context, export_id: uuid.UUID) -> ExportState:
    """The export with its progress; 404 for one unknown, expired or whose person was erased."""
    export = await tx.session.get(Export, export_id)
    if export is None or export.expires_at <= tx.now():
        raise NotFound(f"no export {export_id} (an export is kept {ctx.settings.export_retention_days} days)")
    lead = await load_lead(tx, export.lead_id)
    if lead is None or lead.erased_at is not None:
        raise NotFound(f"no export {export_id}: its person was erased")
    return await _state(tx, export)


async def _complete(tx: UnitOfWork, ctx: Context, export_id: uuid.UUID) -> tuple[ExportState, dict[str, Any]]:
    """The complete export's chunks by service (409 naming what is still pending)."""
    state = await export_state(tx, ctx, export_id)
    if not state.complete:
        raise Conflict(
            f"export {export_id} is not complete yet ({state.progress}): waiting for {', '.join(state.pending)}"
        )
    found = await tx.session.scalars(
        select(ExportChunk).where(ExportChunk.export_id == export_id).order_by(ExportChunk.service, ExportChunk.chunk)
    )
    chunks: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
    for chunk in found:
        chunks.setdefault(chunk.service, []).append((chunk.part, chunk.mail))
    return state, chunks


async def document(tx: UnitOfWork, ctx: Context, export_id: uuid.UUID) -> dict[str, Any]:
    """The export as one JSON document: who it is about, who asked, when, and one object per
    service (the e-mails themselves are in the zip, listed under ``mail``)."""
    state, chunks = await _complete(tx, ctx, export_id)
    export = state.export
    services: dict[str, Any] = {}
    mail: list[str] = []
    for name in SERVICES:
        part, files = assemble(chunks.get(name, []))
        services[name] = part
        mail += sorted(files)
    return jsonable(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "export_id": export.id,
            "lead_id": export.lead_id,
            "requested_at": export.requested_at,
            "requested_by": export.requested_by,
            "completed_at": export.completed_at,
            "expires_at": export.expires_at,
            "services": services,
            "mail": mail,
        }
    )


async def mail_zip(tx: UnitOfWork, ctx: Context, export_id: uuid.UUID) -> tuple[uuid.UUID, bytes]:
    """The e-mails sent to the person, one .eml file each, in a zip (and the person's id)."""
    state, chunks = await _complete(tx, ctx, export_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in SERVICES:
            _part, files = assemble(chunks.get(name, []))
            for filename, content in sorted(files.items()):
                archive.writestr(filename, content)
    return state.export.lead_id, buffer.getvalue()


def encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2).encode()


async def forget_exports(tx: UnitOfWork, lead_id: uuid.UUID) -> None:
    """Erasure: the person's exports go, with every part gathered."""
    ids = select(Export.id).where(Export.lead_id == lead_id)
    await tx.session.execute(delete(ExportChunk).where(ExportChunk.export_id.in_(ids)))
    await tx.session.execute(delete(Export).where(Export.lead_id == lead_id))


async def purge_expired(uow: UnitOfWorkFactory, now: datetime) -> int:
    """Delete the exports kept past their retention (scheduled, on the business clock)."""
    async with uow() as tx:
        expired = list(await tx.session.scalars(select(Export.id).where(Export.expires_at <= now)))
        for start in range(0, len(expired), 500):
            ids = expired[start : start + 500]
            await tx.session.execute(delete(ExportChunk).where(ExportChunk.export_id.in_(ids)))
            await tx.session.execute(delete(Export).where(Export.id.in_(ids)))
    if expired:
        log.info("purged %d expired exports", len(expired))
    return len(expired)

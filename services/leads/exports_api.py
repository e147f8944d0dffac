"""Exports on request (right of access and portability): ``POST /leads/{lead_id}/export``, its
progress at ``GET /exports/{export_id}``, and once complete its two downloads, the JSON document
and the zip of the e-mails sent. Admin only; every call is in the audit trail with the person."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from services.leads import exports
from services.leads.context import Context
from shared.access import policy as P
from shared.access.context import CURRENT_ACTOR, system_actor
from shared.access.middleware import AUDIT_LEAD_ID
from shared.access.rules import need
from shared.events import Actor
from shared.service import ServiceRuntime


class ExportOut(BaseModel):
    """An export of one person's data and how far it got."""

    export_id: uuid.UUID
    lead_id: uuid.UUID = Field(description="the person exported")
    status: Literal["gathering", "complete"] = Field(description="complete once every service's part is in")
    services: dict[str, Literal["pending", "done"]] = Field(
        description="each service's part", examples=[{"leads": "done", "nurture": "pending"}]
    )
    progress: str = Field(description="services done of all", examples=["2/4"])
    requested_at: datetime
    requested_by: Actor = Field(description="who asked")
    completed_at: datetime | None = None
    expires_at: datetime = Field(description="when it is deleted (LEADS_EXPORT_RETENTION_DAYS after the request)")
    download_url: str | None = Field(default=None, description="the JSON document, once complete")
    mail_url: str | None = Field(default=None, description="a zip of the e-mails sent (.eml), once complete")


def export_out(state: exports.ExportState) -> ExportOut:
    export = state.export
    base = f"/exports/{export.id}"
    return ExportOut(
        export_id=export.id,
        lead_id=export.lead_id,
        status="complete" if state.complete else "gathering",
        services=state.services,
        progress=state.progress,
        requested_at=export.requested_at,
        requested_by=Actor.model_validate(export.requested_by),
        completed_at=export.completed_at,
        expires_at=export.expires_at,
        download_url=f"{base}/download" if state.complete else None,
        mail_url=f"{base}/mail.zip" if state.complete else None,
    )


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.post(
        "/leads/{lead_id}/export",
        dependencies=[need(P.EXPORTS_RUN)],
        status_code=202,
        response_model=ExportOut,
        tags=["privacy"],
    )
    async def request_export(lead_id: uuid.UUID, response: Response) -> ExportOut:
        """Gather everything the services hold about the person (right of access): leads' part at
        once, the others' as they answer over the wire. Poll `GET /exports/{export_id}`; 404 for
        an unknown or erased person."""
        actor = CURRENT_ACTOR.get() or system_actor("leads")
        async with uow() as tx:
            state = await exports.request_export(tx, ctx, lead_id, requested_by=actor)
        response.headers["Location"] = f"/exports/{state.export.id}"
        return export_out(state)

    @api.get(
        "/exports/{export_id}",
        dependencies=[need(P.EXPORTS_RUN, person=True)],
        response_model=ExportOut,
        tags=["privacy"],
    )
    async def read_export(export_id: uuid.UUID) -> ExportOut:
        """An export's progress per service, and its downloads once complete; 404 for an unknown
        or expired export, or one whose person was erased since."""
        async with uow() as tx:
            return export_out(await exports.export_state(tx, ctx, export_id))

    @api.get(
        "/exports/{export_id}/download",
        dependencies=[need(P.EXPORTS_RUN, person=True)],
        response_class=Response,
        responses={200: {"content": {"application/json": {}}, "description": "the export as one JSON document"}},
        tags=["privacy"],
    )
    async def download(export_id: uuid.UUID, request: Request) -> Response:
        """The export as one JSON document: one object per service, with who, when and the
        format version; 409 naming the services still pending before it is complete."""
        async with uow() as tx:
            document = await exports.document(tx, ctx, export_id)
        # A download is no JSON object naming its person: the audit row gets them from here.
        setattr(request.state, AUDIT_LEAD_ID, document["lead_id"])
        return Response(
            exports.encoded(document),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="clientflow-export-{export_id}.json"'},
        )

    @api.get(
        "/exports/{export_id}/mail.zip",
        dependencies=[need(P.EXPORTS_RUN, person=True)],
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "the e-mails sent, one .eml each"}},
        tags=["privacy"],
    )
    async def mail(export_id: uuid.UUID, request: Request) -> Response:
        """The e-mails sent to the person, one .eml file each, in a zip; 409 before the export
        is complete."""
        async with uow() as tx:
            lead_id, archive = await exports.mail_zip(tx, ctx, export_id)
        setattr(request.state, AUDIT_LEAD_ID, str(lead_id))
        return Response(
            archive,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="clientflow-mail-{export_id}.zip"'},
        )

    return api

"""Billing's write-off routes: end a won project as a loss, and the write-offs per client and
channel (docs/design.md, "HTTP surface")."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.billing import write_offs
from services.billing.context import Billing
from services.billing.schemas import Cents
from services.billing.store import WriteOff
from shared.access import policy as P
from shared.access.rules import need
from shared.money import DecimalStr
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


class WriteOffIn(BaseModel):
    reason: str = Field(
        min_length=1, max_length=2000, examples=["project from hell"], description="why the project is written off"
    )


class WriteOffOut(BaseModel):
    deal_id: uuid.UUID = Field(description="the project written off")
    lead_id: uuid.UUID = Field(description="the client")
    channel: str = Field(
        examples=["referral"], description=f"the lead's acquisition channel (`{write_offs.UNKNOWN_CHANNEL}` if none)"
    )
    currency: str = Field(description="ISO 4217 code of every amount")
    worth: Cents = Field(description="what the deal was worth: the estimate plus approved change orders")
    paid: Cents = Field(description="what the client paid on it")
    amount: Cents = Field(description="written off: worth minus paid")
    reason: str = Field(description="why it was written off")
    voided_invoice_ids: list[uuid.UUID] = Field(description="open invoices nothing was paid on, voided")
    credit_note_ids: list[uuid.UUID] = Field(description="credit notes cancelling what was due on partly paid invoices")
    written_off_at: datetime = Field(description="when")


class WriteOffsOut(BaseModel):
    totals: dict[str, DecimalStr] = Field(description="amount written off per currency (never converted)")
    by_channel: dict[str, dict[str, DecimalStr]] = Field(description="amount written off per channel, then currency")
    write_offs: list[WriteOffOut] = Field(description="the write-offs, oldest first")


def write_off_out(row: WriteOff) -> WriteOffOut:
    return WriteOffOut(
        deal_id=row.deal_id,
        lead_id=row.lead_id,
        channel=row.channel or write_offs.UNKNOWN_CHANNEL,
        currency=row.currency,
        worth=row.worth,
        paid=row.paid,
        amount=row.amount,
        reason=row.reason,
        voided_invoice_ids=[uuid.UUID(i) for i in row.voided_invoice_ids],
        credit_note_ids=[uuid.UUID(n) for n in row.credit_note_ids],
        written_off_at=row.written_off_at,
    )


def router(runtime: ServiceRuntime, _ctx: Billing) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.post(
        "/deals/{deal_id}/write-off",
        dependencies=[need(P.INVOICES_WRITE)],
        status_code=201,
        response_model=WriteOffOut,
        tags=["deals"],
    )
    async def write_off(deal_id: uuid.UUID, body: WriteOffIn) -> WriteOffOut:
        """End a won project as a loss: its open unpaid invoices are voided, what is still due
        on partly paid ones is credited, nothing more is invoiced, and what it was worth minus
        what was paid is written off. 404 for a deal billing never saw won; 409 for a retainer
        or a deal already written off."""
        async with uow() as tx:
            return write_off_out(await write_offs.write_off(tx, deal_id=deal_id, reason=body.reason))

    @api.get(
        "/write-offs",
        dependencies=[need(P.MONEY_REPORTS_READ)],
        response_model=WriteOffsOut,
        tags=["reports"],
    )
    async def list_write_offs(lead_id: uuid.UUID | None = None, channel: str | None = None) -> WriteOffsOut:
        """Write-offs of a client or a channel (or all), with totals per currency and per channel."""

        async def read(tx: UnitOfWork) -> WriteOffsOut:
            report = await write_offs.list_write_offs(tx, lead_id=lead_id, channel=channel)
            return WriteOffsOut(
                totals=report.totals,
                by_channel=report.by_channel,
                write_offs=[write_off_out(r) for r in report.write_offs],
            )

        return await runtime.reads.run(read)

    return api

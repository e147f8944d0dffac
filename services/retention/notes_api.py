"""Retention's routes for notes on a client, a tier set by hand and company accounts: validate,
call one use case, answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from services.retention import accounts, manual_tier, notes, record
from services.retention.context import Context
from services.retention.schemas import (
    AccountClientsOut,
    ClientOut,
    ManualTierIn,
    ManualTierOut,
    MoneyOut,
    NoteIn,
    NoteOut,
    TierOut,
)
from services.retention.store import Client, ManualTierRow
from shared.access import policy as P
from shared.access.rules import need
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def manual_out(row: ManualTierRow | None) -> ManualTierOut | None:
    if row is None:
        return None
    return ManualTierOut(tier=row.tier, reason=row.reason, until=row.until, set_by=row.set_by, set_at=row.set_at)


def tier_out(client: Client, row: ManualTierRow | None) -> TierOut:
    return TierOut(
        lead_id=client.lead_id,
        tier=client.tier,
        computed_tier=client.computed_tier,
        manual_tier=manual_out(row),
        reasons=client.tier_reasons or [],
    )


async def with_manual_tier(tx: UnitOfWork, client: ClientOut) -> ClientOut:
    """GET /clients/{lead_id} shows the manual tier beside the computed one."""
    client.manual_tier = manual_out(await manual_tier.manual_of(tx, client.lead_id))
    return client


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.post(
        "/clients/{lead_id}/notes",
        dependencies=[need(P.NOTES_WRITE)],
        status_code=201,
        response_model=NoteOut,
        tags=["clients"],
    )
    async def add_note(lead_id: uuid.UUID, body: NoteIn) -> NoteOut:
        """Keep a note on a client (`text` 1-5000 characters, `tags` from the fixed list). The
        text is personal data: never published, erased with the person. 404 for an unknown
        client."""
        async with uow() as tx:
            return NoteOut.model_validate(await notes.add_note(tx, lead_id, text=body.text, tags=body.tags))

    @api.get(
        "/clients/{lead_id}/notes",
        dependencies=[need(P.NOTES_READ, person=True)],
        response_model=list[NoteOut],
        tags=["clients"],
    )
    async def list_notes(lead_id: uuid.UUID) -> list[NoteOut]:
        """The client's notes, newest first."""
        async with uow() as tx:
            return [NoteOut.model_validate(n) for n in await notes.notes_of(tx, lead_id)]

    @api.put(
        "/clients/{lead_id}/tier",
        dependencies=[need(P.TIERS_WRITE)],
        response_model=TierOut,
        tags=["tiers"],
    )
    async def set_tier(lead_id: uuid.UUID, body: ManualTierIn) -> TierOut:
        """Set the client's tier by hand (`tier`, `reason`, `until` a future day): it wins over
        the computed tier until then (`client.tier_set_manually`; `client.tier_changed` when the
        tier in force changes)."""
        async with uow() as tx:
            row = await manual_tier.set_manual_tier(
                tx, ctx, lead_id, tier=body.tier, reason=body.reason, until=body.until
            )
            return tier_out(await record.get_client(tx, lead_id), row)

    @api.delete("/clients/{lead_id}/tier", dependencies=[need(P.TIERS_WRITE)], response_model=TierOut, tags=["tiers"])
    async def remove_tier(lead_id: uuid.UUID) -> TierOut:
        """Remove the manual tier (404 when there is none): the computed tier is in force again."""
        async with uow() as tx:
            return tier_out(await manual_tier.remove_manual_tier(tx, ctx, lead_id), None)

    @api.get(
        "/accounts/{account_id}",
        dependencies=[need(P.CLIENTS_READ)],
        response_model=AccountClientsOut,
        tags=["clients"],
    )
    async def read_account(account_id: uuid.UUID) -> AccountClientsOut:
        """A company account's clients with their health, its MRR and revenue (per currency),
        and the worst and average health; 404 when no one of the account is known."""
        from services.retention.api import client_summary  # the list's shape, one definition

        async def read(tx: UnitOfWork) -> AccountClientsOut:
            f = await accounts.account_figures(tx, account_id)
            return AccountClientsOut(
                account_id=account_id,
                clients=[client_summary(c) for c in f.clients],
                mrr=[MoneyOut(amount=a, currency=c) for c, a in sorted(f.mrr.items())],
                revenue=[MoneyOut(amount=a, currency=c) for c, a in sorted(f.revenue.items())],
                worst_health=f.worst.health_score if f.worst else None,
                worst_band=f.worst.band if f.worst else None,
                average_health=f.average_health,
            )

        return await runtime.reads.run(read)

    return api

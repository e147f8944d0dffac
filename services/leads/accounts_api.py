"""The company account route: ``GET /accounts/{account_id}``."""

from __future__ import annotations

import uuid
from collections import Counter

from fastapi import APIRouter

from services.leads import accounts
from services.leads.context import Context
from services.leads.schemas import AccountDeal, AccountOut, AccountPerson
from shared.access import policy as P
from shared.access.rules import need
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    api = APIRouter()

    @api.get("/accounts/{account_id}", dependencies=[need(P.LEADS_READ)], response_model=AccountOut, tags=["leads"])
    async def read_account(account_id: uuid.UUID) -> AccountOut:
        """A company account with its people (leads), each with their stage and deals; 404 for
        an unknown account."""

        async def read(tx: UnitOfWork) -> AccountOut:
            account = await accounts.get_account(tx, account_id)
            people = await accounts.people_of(tx, account_id)
            deals = await accounts.deals_of_people(tx, [p.id for p in people])
            return AccountOut(
                account_id=account.id,
                name=account.name,
                domain=account.domain,
                created_at=account.created_at,
                people=[
                    AccountPerson(
                        lead_id=p.id,
                        name=p.name,
                        email=p.email,
                        job_title=p.job_title,
                        stage=p.stage,
                        tier=p.tier,
                        owner_id=p.owner_id,
                        created_at=p.created_at,
                        deals=[AccountDeal.model_validate(d, from_attributes=True) for d in deals[p.id]],
                    )
                    for p in people
                ],
                stages=dict(Counter(p.stage for p in people)),
            )

        return await runtime.reads.run(read)

    return api

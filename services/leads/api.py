"""Leads' HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import func, select

from services.leads import handlers
from services.leads.schemas import (
    DealIn,
    DealOut,
    FunnelOut,
    LeadCreated,
    LeadIn,
    LeadList,
    LeadOut,
    LostIn,
    StageEntry,
    WonIn,
)
from services.leads.settings import Settings
from services.leads.store import Deal, Lead
from shared.http import api_key_guard
from shared.service import ServiceRuntime


def lead_out(lead: Lead, history: list | None = None) -> LeadOut:
    return LeadOut(
        lead_id=lead.id,
        name=lead.name,
        email=lead.email,
        company=lead.company,
        channel=lead.channel,
        stage=lead.stage,
        fit_score=lead.fit_score,
        fit_matched=lead.fit_matched,
        fit_missed=lead.fit_missed,
        engagement_score=lead.engagement_score,
        red_flags=lead.red_flags,
        tier=lead.tier,
        created_at=lead.created_at,
        erased=lead.erased_at is not None,
        timeline=[
            StageEntry(from_stage=h.from_stage, to_stage=h.to_stage, cause=h.cause, at=h.at) for h in history or []
        ],
    )


def deal_out(deal: Deal) -> DealOut:
    return DealOut(
        deal_id=deal.id,
        lead_id=deal.lead_id,
        title=deal.title,
        kind=deal.kind,
        status=deal.status,
        currency=deal.currency,
        total=deal.total,
        monthly_fee=deal.monthly_fee,
        included_hours=deal.included_hours,
        hourly_rate=deal.hourly_rate,
        lines=deal.lines,
        signed_by=deal.signed_by,
        signed_at=deal.signed_at,
        deposit_share=deal.deposit_share,
        lost_reason=deal.lost_reason,
    )


def router(runtime: ServiceRuntime, settings: Settings) -> APIRouter:
    uow = runtime.uow
    write = [Depends(api_key_guard(settings.api_key.get_secret_value()))]
    api = APIRouter()

    @api.post("/leads", status_code=201, response_model=LeadCreated, dependencies=write, tags=["leads"])
    async def create_lead(body: LeadIn, response: Response) -> LeadCreated:
        """Capture a lead; a known email answers 200 with the existing `lead_id`."""
        async with uow() as tx:
            created = await handlers.capture_lead(tx, body)
        if created.duplicate:
            response.status_code = 200
        return created

    @api.get("/leads", response_model=LeadList, tags=["leads"])
    async def list_leads(
        stage: str | None = None,
        channel: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> LeadList:
        async with uow() as tx:
            query = select(Lead)
            if stage:
                query = query.where(Lead.stage == stage)
            if channel:
                query = query.where(Lead.channel == channel)
            total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await tx.session.scalars(query.order_by(Lead.created_at, Lead.id).limit(limit).offset(offset))
            return LeadList(items=[lead_out(r) for r in rows], total=total or 0, limit=limit, offset=offset)

    @api.get("/leads/{lead_id}", response_model=LeadOut, tags=["leads"])
    async def read_lead(lead_id: uuid.UUID) -> LeadOut:
        async with uow() as tx:
            lead = await handlers.get_lead(tx, lead_id)
            return lead_out(lead, await handlers.stage_history(tx, lead_id))

    @api.post("/leads/{lead_id}/deals", status_code=201, response_model=DealOut, dependencies=write, tags=["deals"])
    async def create_deal(lead_id: uuid.UUID, body: DealIn) -> DealOut:
        """Write an estimate (scope lines; a retainer has a monthly fee and included hours)."""
        async with uow() as tx:
            return deal_out(await handlers.propose_deal(tx, lead_id, body))

    @api.get("/deals/{deal_id}", response_model=DealOut, tags=["deals"])
    async def read_deal(deal_id: uuid.UUID) -> DealOut:
        async with uow() as tx:
            return deal_out(await handlers.get_deal(tx, deal_id))

    @api.post("/deals/{deal_id}/won", response_model=DealOut, dependencies=write, tags=["deals"])
    async def won(deal_id: uuid.UUID, body: WonIn) -> DealOut:
        """The estimate was signed: no signature, no deal."""
        async with uow() as tx:
            return deal_out(
                await handlers.win_deal(tx, settings, deal_id, signed_by=body.signed_by, signed_at=body.signed_at)
            )

    @api.post("/deals/{deal_id}/lost", response_model=DealOut, dependencies=write, tags=["deals"])
    async def lost(deal_id: uuid.UUID, body: LostIn) -> DealOut:
        async with uow() as tx:
            return deal_out(await handlers.lose_deal(tx, deal_id, body.reason))

    @api.get("/funnel", response_model=FunnelOut, tags=["funnel"])
    async def read_funnel() -> FunnelOut:
        async with uow() as tx:
            stages = await handlers.funnel(tx)
        return FunnelOut(stages=stages, total=sum(stages.values()))

    return api

"""Leads' HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from services.leads import capture, deals, funnel, importer, privacy, qualification, record, timeline
from services.leads import spend as channel_spend
from services.leads.context import Context
from services.leads.engagement import engagement_now
from services.leads.funnel import LeadFilter
from services.leads.schemas import (
    ActivityEntry,
    ChangeRequestIn,
    ChangeRequestOut,
    DealIn,
    DealOut,
    ErasedOut,
    FunnelOut,
    IcpOut,
    ImportReportOut,
    LeadCreated,
    LeadIn,
    LeadList,
    LeadOut,
    LostIn,
    MergeIn,
    QualificationIn,
    QualificationOut,
    RedFlagIn,
    SpendIn,
    SpendOut,
    StageEntry,
    StageIn,
    TouchOut,
    WonIn,
)
from services.leads.store import Activity, ChangeRequest, Deal, Lead, StageChange, Touch
from shared.access import policy as P
from shared.access.context import owner_query
from shared.access.rules import need
from shared.bounds import DATE_RANGE, MAX_COUNT, Day
from shared.errors import Conflict, DomainError
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


def lead_out(
    ctx: Context,
    lead: Lead,
    now: datetime,
    *,
    history: list[StageChange] | None = None,
    activity: list[Activity] | None = None,
    touches: list[Touch] | None = None,
    deals: list[Deal] | None = None,
) -> LeadOut:
    """A lead as answered, with whichever of its history, activity, touches and deals were read."""
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
        engagement_score=engagement_now(ctx, lead, now),
        red_flags=lead.red_flags,
        tier=lead.tier,
        created_at=lead.created_at,
        erased=lead.erased_at is not None,
        timeline=[StageEntry.model_validate(h) for h in history or []],
        job_title=lead.job_title,
        industry=lead.industry,
        employees=lead.employees,
        annual_revenue=lead.annual_revenue,
        country=lead.country,
        language=lead.language,
        timezone=lead.timezone,
        campaign=lead.campaign,
        utm=lead.utm or {},
        budget=lead.budget,
        currency=lead.currency,
        brief=lead.brief,
        timeline_text=lead.timeline,
        needs=lead.needs or [],
        consent_marketing=lead.consent_marketing,
        legal_basis=lead.legal_basis,
        referred_by=lead.referred_by,
        referrals=lead.referrals or 0,
        surcharge=lead.surcharge,
        tier_reasons=lead.tier_reasons or [],
        qualification=lead.qualification,
        merged_into=lead.merged_into,
        updated_at=lead.updated_at,
        erased_at=lead.erased_at,
        touches=[TouchOut.model_validate(t) for t in touches or []],
        activity=[ActivityEntry.model_validate(a) for a in activity or []],
        deals=[d.id for d in deals or []],
        owner_id=lead.owner_id,
        assigned_at=lead.assigned_at,
        account_owner_id=lead.account_owner_id,
        first_touch_due_at=lead.first_touch_due_at,
        first_touched_at=lead.first_touched_at,
        account_id=lead.account_id,
    )


def deal_out(deal: Deal, requests: list[ChangeRequest] | None = None, *, link: str | None = None) -> DealOut:
    """A deal as answered, with its change requests when they were read and its acceptance link
    (``deals.acceptance_link``) while it is open."""
    out = DealOut.model_validate(deal)
    out.change_requests = [ChangeRequestOut.model_validate(r) for r in requests or []]
    out.acceptance_url = link
    return out


IMPORT_CHUNK = 200


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.post(
        "/leads", dependencies=[need(P.LEADS_CAPTURE)], status_code=201, response_model=LeadCreated, tags=["leads"]
    )
    async def create_lead(body: LeadIn, response: Response) -> LeadCreated:
        """Capture a lead; a known email (or company domain) answers 200 with the existing
        `lead_id` and records the new touch on it."""
        for attempt in (1, 2):
            try:
                async with uow() as tx:
                    created = await capture.capture_lead(tx, ctx, body)
                break
            except IntegrityError:
                # The same person captured at the same moment by another request: read it again.
                if attempt == 2:
                    raise Conflict("the same lead is being captured by another request; retry") from None
        if created.duplicate:
            response.status_code = 200
        return LeadCreated.model_validate(created, from_attributes=True)

    @api.post(
        "/leads/import",
        dependencies=[need(P.LEADS_IMPORT)],
        response_model=ImportReportOut,
        tags=["leads"],
        openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def import_leads(
        request: Request,
        first_row: int = Query(
            1, ge=1, le=MAX_COUNT, description="number of the first data row (for a file sent in parts)"
        ),
    ) -> ImportReportOut:
        """Import a CSV file (body `text/csv`, header with the JSON field names): good rows go in,
        every rejected row is reported with what is wrong. Duplicates count as touches."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DomainError(f"the file is not UTF-8 text (byte {exc.start} cannot be read)") from exc
        try:
            # Parsing thousands of rows is CPU: off the loop.
            rows, ignored = await asyncio.to_thread(
                importer.parse, text, first_row=first_row, max_rows=ctx.settings.import_max_rows
            )
        except importer.ImportError_ as exc:
            raise DomainError(str(exc)) from exc
        # A transaction per chunk of rows: on SQLite one commit of thousands of leads was one long
        # synchronous flush that held the loop (health checks waited over 100 ms). Rows are
        # independent (each captured or refused on its own); a file sent again is deduplicated.
        report = capture.ImportReport(rows=len(rows))
        duty = ctx.settings.import_duty_cycle
        for start in range(0, len(rows), IMPORT_CHUNK):
            began = time.perf_counter()
            async with uow() as tx:
                report.add(await capture.import_rows(tx, ctx, rows[start : start + IMPORT_CHUNK]))
            # A bulk import is background work: it leaves the rest of each period to requests,
            # consumers and the services downstream that its leads keep busy.
            await asyncio.sleep((time.perf_counter() - began) * (1 - duty) / duty)
        return ImportReportOut(
            rows=report.rows,
            accepted=report.accepted,
            duplicates=report.duplicates,
            rejected=report.rejected,
            errors=report.errors,
            ignored_columns=ignored,
        )

    @api.get("/leads", dependencies=[need(P.LEADS_READ)], response_model=LeadList, tags=["leads"])
    async def list_leads(
        stage: str | None = None,
        tier: str | None = None,
        channel: str | None = None,
        min_fit: int | None = Query(None, ge=0, le=100, description="minimum fit score"),
        red_flag: str | None = Query(None, description="only leads with this red flag"),
        q: str | None = Query(None, max_length=200, description="text in name, email or company"),
        include_erased: bool = False,
        owner: str | None = Query(None, description="me, none (the pool) or a person id"),
        sort: str = Query("created_at", description="created_at, fit_score or updated_at; '-' for descending"),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_COUNT),
    ) -> LeadList:
        """Leads with filters and paging (merged duplicates are left out); `owner=me` is the
        caller's own."""
        owned = owner_query(owner)

        async def read(tx: UnitOfWork) -> LeadList:
            found, total = await funnel.list_leads(
                tx,
                LeadFilter(
                    stage=stage,
                    tier=tier,
                    channel=channel,
                    min_fit=min_fit,
                    red_flag=red_flag,
                    q=q,
                    include_erased=include_erased,
                    owner=owned,
                ),
                sort=sort,
                limit=limit,
                offset=offset,
            )
            now = tx.now()
            return LeadList(items=[lead_out(ctx, r, now) for r in found], total=total, limit=limit, offset=offset)

        return await runtime.reads.run(read)

    @api.get("/leads/{lead_id}", dependencies=[need(P.LEADS_READ, person=True)], response_model=LeadOut, tags=["leads"])
    async def read_lead(lead_id: uuid.UUID) -> LeadOut:
        """A lead with its scores, red flags, tier, stage history (`timeline`) and every event
        about it (`activity`)."""
        async with uow() as tx:
            lead = await record.get_lead(tx, lead_id)
            return lead_out(
                ctx,
                lead,
                tx.now(),
                history=await timeline.stage_history(tx, lead_id),
                activity=await timeline.activity(tx, lead_id),
                touches=await timeline.touches(tx, lead_id),
                deals=await deals.deals_of(tx, lead_id),
            )

    @api.delete("/leads/{lead_id}", dependencies=[need(P.LEADS_ERASE)], response_model=ErasedOut, tags=["leads"])
    async def erase(lead_id: uuid.UUID) -> ErasedOut:
        """Erase the person's data (`lead.erased`); anonymous counts stay. Repeating is harmless."""
        async with uow() as tx:
            lead = await privacy.erase_lead(tx, ctx, lead_id)
        assert lead.erased_at is not None
        return ErasedOut(lead_id=lead.id, erased=True, erased_at=lead.erased_at)

    @api.post(
        "/leads/{lead_id}/qualification",
        dependencies=[need(P.LEADS_WRITE)],
        response_model=QualificationOut,
        tags=["leads"],
    )
    async def qualify(
        lead_id: uuid.UUID,
        body: QualificationIn = Body(default_factory=QualificationIn),  # noqa: B008 - FastAPI's way to declare a body
    ) -> QualificationOut:
        """BANT qualification: `lead.qualified` or `lead.disqualified` with the reasons."""
        async with uow() as tx:
            lead, result = await qualification.qualify_lead(tx, ctx, lead_id, body)
        q = lead.qualification or {}
        return QualificationOut(
            lead_id=lead.id,
            qualified=result.qualified,
            budget=q["budget"],
            authority=q["authority"],
            need=q["need"],
            timeline=q["timeline"],
            reasons=result.reasons,
            stage=lead.stage,
        )

    @api.post(
        "/leads/{lead_id}/red-flags",
        dependencies=[need(P.LEADS_WRITE)],
        status_code=201,
        response_model=LeadOut,
        tags=["leads"],
    )
    async def add_red_flag(lead_id: uuid.UUID, body: RedFlagIn) -> LeadOut:
        """Note a red flag seen during the sale (refuses a deposit, boss reverses direction...)."""
        async with uow() as tx:
            lead = await qualification.note_red_flag(tx, lead_id, name=body.name, evidence=body.evidence)
            return lead_out(ctx, lead, tx.now())

    @api.delete(
        "/leads/{lead_id}/red-flags/{name}", dependencies=[need(P.LEADS_WRITE)], response_model=LeadOut, tags=["leads"]
    )
    async def remove_red_flag(lead_id: uuid.UUID, name: str, reason: str | None = None) -> LeadOut:
        async with uow() as tx:
            lead = await qualification.clear_red_flag(tx, lead_id, name=name, reason=reason)
            return lead_out(ctx, lead, tx.now())

    @api.post("/leads/{lead_id}/stage", dependencies=[need(P.LEADS_WRITE)], response_model=LeadOut, tags=["funnel"])
    async def move(lead_id: uuid.UUID, body: StageIn) -> LeadOut:
        """Move a lead by hand, forwards or backwards, with the reason kept in its history."""
        async with uow() as tx:
            lead = await funnel.set_stage(tx, ctx, lead_id, stage=body.stage, reason=body.reason)
            return lead_out(ctx, lead, tx.now(), history=await timeline.stage_history(tx, lead.id))

    @api.post("/leads/{lead_id}/merge", dependencies=[need(P.LEADS_WRITE)], response_model=LeadOut, tags=["leads"])
    async def merge(lead_id: uuid.UUID, body: MergeIn) -> LeadOut:
        """Merge `duplicate_id` into this lead (explicit, logged on both)."""
        async with uow() as tx:
            lead = await privacy.merge_leads(
                tx, ctx, kept_id=lead_id, duplicate_id=body.duplicate_id, reason=body.reason
            )
            return lead_out(ctx, lead, tx.now(), touches=await timeline.touches(tx, lead.id))

    @api.get("/icp", dependencies=[need(P.ICP_READ)], response_model=IcpOut, tags=["icp"])
    async def read_icp() -> IcpOut:
        """The ideal client profile in force (YAML and its parsed criteria)."""
        async with uow() as tx:
            icp = await qualification.current_icp(tx, ctx)
        return IcpOut(version=icp.version, document=icp.document, criteria=icp.profile.to_dict()["criteria"])

    @api.put(
        "/icp",
        dependencies=[need(P.ICP_WRITE)],
        response_model=IcpOut,
        tags=["icp"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}
        },
    )
    async def replace_icp(request: Request) -> IcpOut:
        """Replace the ICP with a YAML (or JSON) document; every live lead is rescored."""
        try:
            document = (await request.body()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DomainError("the ICP must be UTF-8 text") from exc
        async with uow() as tx:
            version, rescored = await qualification.replace_icp(tx, ctx, document)
            icp = await qualification.current_icp(tx, ctx)
        return IcpOut(
            version=version, document=icp.document, criteria=icp.profile.to_dict()["criteria"], rescored=rescored
        )

    @api.post(
        "/leads/{lead_id}/deals",
        dependencies=[need(P.DEALS_WRITE)],
        status_code=201,
        response_model=DealOut,
        tags=["deals"],
    )
    async def create_deal(lead_id: uuid.UUID, body: DealIn) -> DealOut:
        """Write an estimate (scope lines; a retainer has a monthly fee and included hours)."""
        async with uow() as tx:
            deal = await deals.propose_deal(tx, ctx, lead_id, body)
            return deal_out(deal, link=deals.acceptance_link(ctx, deal))

    @api.get("/deals/{deal_id}", dependencies=[need(P.LEADS_READ, person=True)], response_model=DealOut, tags=["deals"])
    async def read_deal(deal_id: uuid.UUID) -> DealOut:
        async with uow() as tx:
            deal = await deals.get_deal(tx, deal_id)
            return deal_out(deal, await deals.change_requests_of(tx, deal_id), link=deals.acceptance_link(ctx, deal))

    @api.post("/deals/{deal_id}/won", dependencies=[need(P.DEALS_WRITE)], response_model=DealOut, tags=["deals"])
    async def won(deal_id: uuid.UUID, body: WonIn) -> DealOut:
        """The estimate was signed: no signature, no deal."""
        async with uow() as tx:
            deal = await deals.win_deal(tx, ctx, deal_id, signed_by=body.signed_by, signed_at=body.signed_at)
            return deal_out(deal)

    @api.post("/deals/{deal_id}/lost", dependencies=[need(P.DEALS_WRITE)], response_model=DealOut, tags=["deals"])
    async def lost(deal_id: uuid.UUID, body: LostIn) -> DealOut:
        async with uow() as tx:
            return deal_out(await deals.lose_deal(tx, ctx, deal_id, reason=body.reason))

    @api.post(
        "/deals/{deal_id}/change-requests",
        dependencies=[need(P.DEALS_WRITE)],
        status_code=201,
        response_model=ChangeRequestOut,
        tags=["deals"],
    )
    async def change_request(deal_id: uuid.UUID, body: ChangeRequestIn) -> ChangeRequestOut:
        """A change on a signed deal, checked against the estimate's lines: in scope (free) or a
        paid change order (`deal.change_requested`)."""
        async with uow() as tx:
            return ChangeRequestOut.model_validate(await deals.request_change(tx, ctx, deal_id, body))

    @api.post(
        "/channels/{channel}/spend",
        dependencies=[need(P.SPEND_WRITE)],
        status_code=201,
        response_model=SpendOut,
        tags=["channels"],
    )
    async def spend(channel: str, body: SpendIn) -> SpendOut:
        """Spend on a channel for a period (`channel.spend_recorded`), for CAC."""
        async with uow() as tx:
            row, replaced = await channel_spend.record_spend(tx, channel, body)
        return SpendOut(
            channel=row.channel,
            period_start=row.period_start,
            period_end=row.period_end,
            amount=row.amount,
            currency=row.currency,
            replaced=replaced,
        )

    @api.get("/channels", dependencies=[need(P.REPORTS_READ)], tags=["channels"])
    async def read_channels() -> list[dict]:
        """Per channel: spend, leads, clients, cost per lead and CAC (per currency)."""
        return await runtime.reads.run(channel_spend.channels, key="channels")

    @api.get("/funnel", dependencies=[need(P.REPORTS_READ)], response_model=FunnelOut, tags=["funnel"])
    async def read_funnel(
        channel: str | None = None,
        since: Annotated[
            Day | None, Query(alias="from", description=f"captured on or after (UTC date, {DATE_RANGE})")
        ] = None,
        until: Annotated[
            Day | None, Query(alias="to", description=f"captured on or before (UTC date, {DATE_RANGE})")
        ] = None,
        period: Literal["week", "month", "quarter", "year"] = Query("month", description="grain of by_period"),
    ) -> FunnelOut:
        """Counts by stage, how many ever reached each stage and the conversion between stages:
        overall, per channel and per period of capture."""

        async def read(tx: UnitOfWork) -> FunnelOut:
            report = await funnel.funnel(tx, channel=channel, since=since, until=until, grain=period, tz=UTC)
            return FunnelOut.model_validate(report)

        return await runtime.reads.run(read, key=("funnel", channel, since, until, period))

    return api

"""Retention's HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, Depends, Query

from services.retention import handlers
from services.retention.handlers import Context
from services.retention.schemas import (
    CancellationIn,
    CancellationOut,
    ClientList,
    ClientOut,
    ClientSummary,
    EconomicsOut,
    LogoChurnOut,
    MoneyOut,
    OfferOut,
)
from services.retention.store import Cancellation, Client
from shared.http import api_key_guard
from shared.service import ServiceRuntime


def _money(totals: dict[str, Decimal]) -> list[MoneyOut]:
    return [MoneyOut(amount=amount, currency=currency) for currency, amount in totals.items()]


def _mrr(client: Client) -> MoneyOut | None:
    return MoneyOut(amount=client.mrr, currency=client.mrr_currency) if client.mrr_currency else None


def client_out(client: Client, revenue: dict[str, Decimal]) -> ClientOut:
    return ClientOut(
        lead_id=client.lead_id,
        channel=client.channel,
        captured_at=client.captured_at,
        became_client_at=client.became_client_at,
        tier=client.tier,
        health_score=client.health_score,
        band=client.band,  # type: ignore[arg-type]
        factors=client.health_factors or {},  # type: ignore[arg-type]
        revenue=_money(revenue),
        mrr=_mrr(client),
        subscription_status=client.subscription_status,  # type: ignore[arg-type]
        deals_won=client.deals_won,
        erased=client.erased_at is not None,
    )


def client_summary(client: Client) -> ClientSummary:
    return ClientSummary(
        lead_id=client.lead_id,
        tier=client.tier,
        health_score=client.health_score,
        band=client.band,
        subscription_status=client.subscription_status,
        mrr=_mrr(client),
        became_client_at=client.became_client_at,
    )


def cancellation_out(cancellation: Cancellation) -> CancellationOut:
    return CancellationOut(
        cancellation_id=cancellation.id,
        lead_id=cancellation.lead_id,
        status=cancellation.status,  # type: ignore[arg-type]
        reason=cancellation.reason,
        comment=cancellation.comment,
        offer=OfferOut.model_validate(cancellation.offer),
        created_at=cancellation.created_at,
        decided_at=cancellation.decided_at,
    )


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    uow = runtime.uow
    metrics = ctx.metrics
    write = [Depends(api_key_guard(ctx.settings.api_key.get_secret_value()))]
    api = APIRouter()

    @api.get("/clients", response_model=ClientList, tags=["clients"])
    async def list_clients(
        tier: Literal["best", "good", "tolerable", "fire"] | None = None,
        band: Literal["red", "yellow", "green"] | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> ClientList:
        """Clients (not prospects), optionally of one tier or health band, oldest first."""
        async with uow() as tx:
            rows, total = await handlers.list_clients(tx, tier=tier, band=band, limit=limit, offset=offset)
            return ClientList(items=[client_summary(r) for r in rows], total=total, limit=limit, offset=offset)

    @api.get("/clients/{lead_id}", response_model=ClientOut, tags=["clients"])
    async def read_client(lead_id: uuid.UUID) -> ClientOut:
        """Health score, band, tier and the factors behind the score, with revenue and MRR."""
        async with uow() as tx:
            client = await handlers.get_client(tx, lead_id)
            return client_out(client, await handlers.revenue_of(tx, lead_id))

    @api.post(
        "/clients/{lead_id}/cancellation",
        status_code=201,
        response_model=CancellationOut,
        dependencies=write,
        tags=["cancellations"],
    )
    async def request_cancellation(lead_id: uuid.UUID, body: CancellationIn) -> CancellationOut:
        """The client wants to cancel: answers with the save offer (a pause or a discount)."""
        async with uow() as tx:
            cancellation = await handlers.request_cancellation(tx, ctx, lead_id, reason=body.reason, comment=body.comment)
        metrics.count_cancellation(cancellation.reason, "requested")
        return cancellation_out(cancellation)

    @api.get("/cancellations/{cancellation_id}", response_model=CancellationOut, tags=["cancellations"])
    async def read_cancellation(cancellation_id: uuid.UUID) -> CancellationOut:
        async with uow() as tx:
            return cancellation_out(await handlers.get_cancellation(tx, cancellation_id))

    @api.post(
        "/cancellations/{cancellation_id}/accept",
        response_model=CancellationOut,
        dependencies=write,
        tags=["cancellations"],
    )
    async def accept(cancellation_id: uuid.UUID) -> CancellationOut:
        """The client takes the save offer; a repeat answers the same."""
        async with uow() as tx:
            cancellation, saved = await handlers.accept_offer(tx, cancellation_id)
        if saved:
            metrics.count_cancellation(cancellation.reason, "saved")
        return cancellation_out(cancellation)

    @api.post(
        "/cancellations/{cancellation_id}/confirm",
        response_model=CancellationOut,
        dependencies=write,
        tags=["cancellations"],
    )
    async def confirm(cancellation_id: uuid.UUID) -> CancellationOut:
        """The client declines the offer and leaves; a repeat answers the same."""
        async with uow() as tx:
            cancellation, completed = await handlers.confirm_cancellation(tx, cancellation_id)
        if completed:
            metrics.count_cancellation(cancellation.reason, "completed")
        return cancellation_out(cancellation)

    @api.get("/economics", response_model=EconomicsOut, tags=["economics"])
    async def read_economics() -> EconomicsOut:
        """Clients, subscriptions, MRR (paused excluded) and revenue by currency, logo churn."""
        async with uow() as tx:
            figures = await handlers.economics(tx)
        churn = figures.logo_churn
        return EconomicsOut(
            clients=figures.clients,
            active_subscriptions=figures.active_subscriptions,
            paused_subscriptions=figures.paused_subscriptions,
            mrr=_money(figures.mrr),
            revenue=_money(figures.revenue),
            logo_churn=LogoChurnOut(
                rate=churn.rate, cancelled=churn.lost, ever_subscribed=churn.base, reason=churn.reason
            ),
            as_of=figures.as_of,
        )

    return api

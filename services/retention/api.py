"""Retention's HTTP routes: validate, call one use case, answer."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import TypeAdapter, ValidationError

from services.retention import cancellations, domain, economics, loyalty, notes_api, termination_api, tiers, views
from services.retention.context import Context
from services.retention.schemas import (
    CancellationIn,
    CancellationOut,
    ChurnRiskOut,
    ClientList,
    ClientOut,
    ClientSummary,
    EconomicsOut,
    EventRef,
    FactorOut,
    LogoChurnOut,
    MoneyOut,
    OfferIn,
    ReferralIn,
    ReferralOut,
    ReviewOut,
    TrendOut,
)
from services.retention.store import Client, TierReview
from shared.access import policy as P
from shared.access.context import owner_query
from shared.access.rules import need
from shared.bounds import DATE_RANGE, MAX_COUNT, within_dates
from shared.money import CurrencyCode
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork

_CURRENCY = TypeAdapter(CurrencyCode)


def _money(totals: dict[str, Decimal]) -> list[MoneyOut]:
    return [MoneyOut(amount=amount, currency=currency) for currency, amount in totals.items()]


def _mrr(client: Client) -> MoneyOut | None:
    return MoneyOut(amount=client.mrr, currency=client.mrr_currency) if client.mrr_currency else None


def client_out(view: views.ClientView) -> ClientOut:
    """A client as GET /clients/{lead_id} shows it: each factor with its explanation and the
    latest events behind it, the trend, the churn-risk episode and the counts."""
    client = view.client
    factors = {}
    for name, factor in (client.health_factors or {}).items():
        events = view.events.get(name, [])
        factors[name] = FactorOut(
            value=factor["value"],
            weight=factor["weight"],
            evidence=factor.get("evidence", {}),
            explanation=domain.FACTOR_EXPLANATIONS.get(name, ""),
            events=[EventRef(event_id=e.event_id, type=e.type, at=e.at, detail=e.detail or {}) for e in events],
        )
    return ClientOut(
        lead_id=client.lead_id,
        channel=client.channel,
        captured_at=client.captured_at,
        became_client_at=client.became_client_at,
        tier=client.tier,
        health_score=client.health_score,
        band=client.band,
        factors=factors,
        revenue=_money(view.revenue),
        mrr=_mrr(client),
        subscription_status=client.subscription_status,
        deals_won=client.deals_won,
        erased=client.erased_at is not None,
        trend=TrendOut.model_validate(view.trend),
        tier_reasons=client.tier_reasons or [],
        churn_risk=ChurnRiskOut(
            open=client.churn_risk_open, reasons=client.churn_risk_reasons or [], raised_at=client.churn_risk_raised_at
        ),
        counts={
            "invoices_issued": client.invoices_issued,
            "payments_on_time": client.payments_on_time,
            "payments_late": client.payments_late,
            "days_late_total": client.days_late_total,
            "payments_failed": client.payments_failed,
            "change_requests": client.change_requests,
            "out_of_scope_requests": client.out_of_scope_requests,
            "feedback": client.feedback_count,
            "complaints": client.complaints,
            "takeovers": client.takeovers,
            "overdue_invoices": len(client.overdue_invoices or []),
        },
        takeover_active=client.takeover_active,
        loyalty_points=client.loyalty_points,
        referrals_made=client.referrals_made,
        referrals_converted=client.referrals_converted,
        referred_by=client.referred_by,
        owner_id=client.owner_id,
        account_owner_id=client.account_owner_id,
        computed_tier=client.computed_tier,
        account_id=client.account_id,
    )


def review_out(review: TierReview) -> ReviewOut:
    """A tier review: what it found (tier counts, changes, clients to let go) and when."""
    return ReviewOut(review_id=review.id, period=review.period, at=review.at, **review.result)


def _moment(value: str | None, *, name: str) -> datetime | None:
    """A date (midnight UTC) or an RFC 3339 moment; naive ones are UTC."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from exc
    try:
        # 0001-01-01 or 9999-12-31 overflowed the period's arithmetic (a 500).
        within_dates(moment, name=name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def economics_out(figures: dict[str, Any], snap: economics.Snapshot) -> EconomicsOut:
    """The figures of a period (``economics.economics``) with the live snapshot, as GET /economics answers."""
    f = dict(figures)
    spend, leaked, currency = f.pop("spend"), f.pop("leaked_revenue"), f["currency"]
    return EconomicsOut.model_validate(
        {
            **f,
            "spend": MoneyOut(amount=spend, currency=currency),
            "leaked_revenue": MoneyOut(amount=leaked, currency=currency),
            "logo_churn": LogoChurnOut(
                rate=f["logo_churn"],
                monthly_rate=f["monthly_logo_churn"],
                lost=f["clients_lost"],
                clients_at_start=f["clients_at_start"],
                reason=f["reasons"].get("logo_churn"),
            ),
            "clients": snap.clients,
            "active_subscriptions": snap.active_subscriptions,
            "paused_subscriptions": snap.paused_subscriptions,
            "mrr": _money(snap.mrr),
            "revenue": _money(snap.revenue),
            "as_of": snap.as_of,
        }
    )


def client_summary(client: Client) -> ClientSummary:
    """A client as GET /clients lists it."""
    return ClientSummary(
        lead_id=client.lead_id,
        tier=client.tier,
        health_score=client.health_score,
        band=client.band,
        subscription_status=client.subscription_status,
        mrr=_mrr(client),
        became_client_at=client.became_client_at,
        owner_id=client.owner_id,
        account_owner_id=client.account_owner_id,
        account_id=client.account_id,
    )


def router(runtime: ServiceRuntime, ctx: Context) -> APIRouter:
    """Retention's routes: each validates, calls one use case and maps its answer."""
    uow = runtime.uow
    api = APIRouter()

    @api.get("/clients", dependencies=[need(P.CLIENTS_READ)], response_model=ClientList, tags=["clients"])
    async def list_clients(
        tier: Literal["best", "good", "tolerable", "fire"] | None = None,
        band: Literal["red", "yellow", "green"] | None = None,
        owner: str | None = Query(None, max_length=60, description="account owner: me, none (nobody's) or a person id"),
        account_id: uuid.UUID | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_COUNT),
    ) -> ClientList:
        """Clients (not prospects), optionally of one tier or health band, oldest first;
        `owner` filters on the account owner only (`me`: the caller's own clients; `none`:
        clients nobody looks after), not on the sales owner."""
        owned = owner_query(owner)

        async def read(tx: UnitOfWork) -> ClientList:
            rows, total = await views.list_clients(
                tx,
                tier=tier,
                band=band,
                limit=limit,
                offset=offset,
                account_owner=None if owned is None else (owned.person_id or "none"),
                account_id=account_id,
            )
            return ClientList(items=[client_summary(r) for r in rows], total=total, limit=limit, offset=offset)

        return await runtime.reads.run(read)

    @api.get(
        "/clients/{lead_id}",
        dependencies=[need(P.CLIENTS_READ, person=True)],
        response_model=ClientOut,
        tags=["clients"],
    )
    async def read_client(lead_id: uuid.UUID) -> ClientOut:
        """Health score, band, tier and the factors behind the score, with revenue and MRR."""
        async with uow() as tx:
            out = await termination_api.with_termination(tx, client_out(await views.client_view(tx, ctx, lead_id)))
            return await notes_api.with_manual_tier(tx, out)

    @api.post(
        "/clients/{lead_id}/cancellation",
        dependencies=[need(P.CANCELLATIONS_WRITE)],
        status_code=201,
        response_model=CancellationOut,
        tags=["cancellations"],
    )
    async def request_cancellation(lead_id: uuid.UUID, body: CancellationIn) -> CancellationOut:
        """The client wants to cancel: answers with the save offer (a pause or a discount)."""
        async with uow() as tx:
            cancellation = await cancellations.request_cancellation(
                tx, ctx, lead_id, reason=body.reason, comment=body.comment
            )
        return CancellationOut.model_validate(cancellation)

    @api.get(
        "/cancellations/{cancellation_id}",
        dependencies=[need(P.CLIENTS_READ, person=True)],
        response_model=CancellationOut,
        tags=["cancellations"],
    )
    async def read_cancellation(cancellation_id: uuid.UUID) -> CancellationOut:
        async with uow() as tx:
            return CancellationOut.model_validate(await cancellations.get_cancellation(tx, cancellation_id))

    @api.post(
        "/cancellations/{cancellation_id}/accept",
        dependencies=[need(P.CANCELLATIONS_WRITE)],
        response_model=CancellationOut,
        tags=["cancellations"],
    )
    async def accept(cancellation_id: uuid.UUID) -> CancellationOut:
        """The client takes the save offer; a repeat answers the same."""
        async with uow() as tx:
            cancellation = await cancellations.accept_offer(tx, ctx, cancellation_id)
        return CancellationOut.model_validate(cancellation)

    @api.put(
        "/cancellations/{cancellation_id}/offer",
        dependencies=[need(P.CANCELLATIONS_WRITE)],
        response_model=CancellationOut,
        tags=["cancellations"],
    )
    async def tailor(cancellation_id: uuid.UUID, body: OfferIn) -> CancellationOut:
        """Replace the save offer of an open cancellation with one tailored for the client."""
        async with uow() as tx:
            cancellation = await cancellations.tailor_offer(
                tx,
                cancellation_id,
                kind=body.kind,
                discount_percent=body.discount_percent,
                fee=body.fee,
                months=body.months,
                included_hours=body.included_hours,
            )
        return CancellationOut.model_validate(cancellation)

    @api.post(
        "/cancellations/{cancellation_id}/confirm",
        dependencies=[need(P.CANCELLATIONS_WRITE)],
        response_model=CancellationOut,
        tags=["cancellations"],
    )
    async def confirm(cancellation_id: uuid.UUID) -> CancellationOut:
        """The client declines the offer and leaves; a repeat answers the same."""
        async with uow() as tx:
            cancellation = await cancellations.confirm_cancellation(tx, cancellation_id)
        return CancellationOut.model_validate(cancellation)

    @api.get(
        "/economics",
        dependencies=[need(P.REPORTS_READ)],
        response_model=EconomicsOut,
        response_model_by_alias=True,
        tags=["economics"],
    )
    async def read_economics(
        from_: str | None = Query(
            None,
            alias="from",
            description=f"start (inclusive), date or RFC 3339 ({DATE_RANGE}); default: first of this month",
        ),
        to: str | None = Query(None, description=f"end (exclusive), date or RFC 3339 ({DATE_RANGE}); default: now"),
        channel: str | None = Query(None, description="one acquisition channel"),
        currency: str | None = Query(None, min_length=3, max_length=3, description="money figures in this currency"),
        convert: bool = Query(
            False, description="convert amounts in other currencies at the exchange rates set (PUT /exchange-rates)"
        ),
    ) -> EconomicsOut:
        """Leads, conversion at each stage, CAC, ARPA, LTV, LTV:CAC, payback, logo and revenue
        churn, MRR movements, NRR, GRR, share of fire clients, leaked revenue, a cohort table, ROI
        and lead cost per channel, the year's revenue retention, client lifetime, the leak, the
        included-hours comparison and new against old clients, of the period; an empty or
        inverted period is refused (422)."""
        now = runtime.clock.now()
        end = _moment(to, name="to") or now
        start = _moment(from_, name="from") or end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if currency is not None:
            # Checked here: an unknown code would only fail when the answer is built (a 500).
            try:
                currency = _CURRENCY.validate_python(currency)
            except ValidationError as exc:
                raise HTTPException(422, f"currency: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None

        async def read(tx: UnitOfWork) -> EconomicsOut:
            figures = await economics.economics(
                tx, ctx, start=start, end=end, channel=channel, currency=currency, convert=convert
            )
            return economics_out(figures, await economics.snapshot(tx))

        # The query as asked (a default "now" is the moment the shared computation started).
        return await runtime.reads.run(read, key=("economics", from_, to, channel, currency, convert))

    @api.get("/reviews/latest", dependencies=[need(P.CLIENTS_READ)], response_model=ReviewOut, tags=["tiers"])
    async def latest_review() -> ReviewOut:
        """The latest tier review: tiers counted, changes, and the clients to let go."""

        async def read(tx: UnitOfWork) -> ReviewOut:
            return review_out(await tiers.latest_review(tx))

        return await runtime.reads.run(read)

    @api.post(
        "/reviews", dependencies=[need(P.REVIEWS_WRITE)], status_code=201, response_model=ReviewOut, tags=["tiers"]
    )
    async def run_review() -> ReviewOut:
        """Run a tier review now (it also runs on its schedule, monthly by default)."""
        review = await tiers.review_tiers(uow, ctx, runtime.clock.now(), force=True)
        assert review is not None
        return review_out(review)

    @api.post(
        "/referrals",
        dependencies=[need(P.REFERRALS_WRITE)],
        status_code=201,
        response_model=ReferralOut,
        tags=["referrals"],
    )
    async def refer(body: ReferralIn) -> ReferralOut:
        """A client refers someone new (`referral.made`); refused (409) for an existing client."""
        async with uow() as tx:
            referral = await loyalty.make_referral(
                tx,
                referrer_id=body.lead_id,
                name=body.name,
                email=str(body.email),
                company=body.company,
                note=body.note,
            )
        return ReferralOut.model_validate(referral)

    return api

"""Retention's routes for the exchange rates the economics convert with."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.retention import rates
from services.retention.context import Context
from services.retention.domain import rates as rules
from services.retention.store import ExchangeRate
from shared.access import policy as P
from shared.access.rules import need
from shared.bounds import Moment
from shared.money import CurrencyCode
from shared.service import ServiceRuntime
from shared.uow import UnitOfWork


class RateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    currency: CurrencyCode = Field(examples=["USD"], description="the currency converted")
    quote: CurrencyCode = Field(examples=["EUR"], description="the currency it is converted into")
    valid_from: Moment = Field(description="the rate holds from this moment until the pair's next rate")
    rate: Decimal = Field(gt=0, le=Decimal("1e9"), max_digits=24, examples=["0.92"], description="quote per unit")


class RatesIn(BaseModel):
    rates: list[RateIn] = Field(min_length=1, max_length=1000)


class RateOut(BaseModel):
    currency: str
    quote: str
    valid_from: Moment
    rate: str = Field(description="units of `quote` for one unit of `currency`, exactly as set")


def rate_out(row: ExchangeRate) -> RateOut:
    return RateOut(currency=row.currency, quote=row.quote, valid_from=row.valid_from, rate=row.rate_text)


def router(runtime: ServiceRuntime, _ctx: Context) -> APIRouter:
    uow = runtime.uow
    api = APIRouter()

    @api.put(
        "/exchange-rates",
        dependencies=[need(P.RATES_WRITE)],
        response_model=list[RateOut],
        tags=["economics"],
    )
    async def set_rates(body: RatesIn) -> list[RateOut]:
        """Set exchange rates, each from its date (a pair's later rate takes over from its own
        date); `GET /economics?convert=true` converts with them."""
        async with uow() as tx:
            rows = await rates.set_rates(
                tx, [rules.Rate(r.currency, r.quote, r.valid_from, r.rate) for r in body.rates]
            )
            return [rate_out(row) for row in rows]

    @api.get(
        "/exchange-rates",
        dependencies=[need(P.REPORTS_READ)],
        response_model=list[RateOut],
        tags=["economics"],
    )
    async def read_rates() -> list[RateOut]:
        """Every exchange rate set, by pair and date."""

        async def read(tx: UnitOfWork) -> list[RateOut]:
            return [rate_out(row) for row in await rates.list_rates(tx)]

        return await runtime.reads.run(read)

    return api

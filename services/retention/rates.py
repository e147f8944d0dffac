"""Exchange rates set as data: the economics convert amounts in other currencies with them
(``domain/rates.py``). Each rate set is announced (``exchange_rate.set``), so a replay rebuilds
the table from the topic like everything else retention knows."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from services.retention.domain import rates as rules
from services.retention.store import ExchangeRate
from shared import events as ev
from shared.errors import Invalid
from shared.uow import UnitOfWork


async def set_rates(tx: UnitOfWork, rates: list[rules.Rate]) -> list[ExchangeRate]:
    """Set (or correct) each rate of a pair from its date; all or none (``Invalid`` names the
    item that is wrong)."""
    for i, rate in enumerate(rates):
        try:
            rules.check_rate(rate)
        except ValueError as exc:
            raise Invalid(f"rates[{i}].{exc}") from None
    rows = []
    for rate in rates:
        rows.append(await _store(tx, rate))
        tx.emit(
            "exchange_rate.set",
            ev.ExchangeRateSet(currency=rate.currency, quote=rate.quote, valid_from=rate.valid_from, rate=rate.rate),
            lead_id=None,
            key=f"rate:{rate.currency}:{rate.quote}",  # a pair's rates stay in order on one partition
        )
    return rows


async def _store(tx: UnitOfWork, rate: rules.Rate) -> ExchangeRate:
    row = await tx.session.get(ExchangeRate, (rate.currency, rate.quote, rate.valid_from))
    if row is None:
        row = ExchangeRate(currency=rate.currency, quote=rate.quote, valid_from=rate.valid_from, rate_text="0")
        tx.session.add(row)
    row.rate_text = format(rate.rate, "f")
    row.set_at = tx.now()
    return row


async def list_rates(tx: UnitOfWork) -> list[ExchangeRate]:
    rows = await tx.session.scalars(
        select(ExchangeRate).order_by(ExchangeRate.currency, ExchangeRate.quote, ExchangeRate.valid_from)
    )
    return list(rows)


async def replay_rate(tx: UnitOfWork, p: ev.ExchangeRateSet) -> None:
    """Rebuild: the rate as it was set."""
    await _store(tx, rules.Rate(p.currency, p.quote, p.valid_from, Decimal(p.rate)))

"""Money as a decimal amount with an ISO 4217 currency; never a float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
_CENT = Decimal("0.01")


def _currency(code: str) -> str:
    code = code.strip().upper()
    if code not in _CURRENCIES:
        raise ValueError(f"unknown currency {code!r}: use an ISO 4217 code such as EUR or USD")
    return code


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("amount must not be negative")
    return value


CurrencyCode = Annotated[
    str,
    AfterValidator(_currency),
    Field(description="ISO 4217 currency code", examples=["EUR"]),
]
# Decimals travel as strings ("1250.00") so no consumer ever sees a float.
DecimalStr = Annotated[
    Decimal,
    AfterValidator(_finite),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    Field(description="decimal number as a string", examples=["1250.00"]),
]
Amount = Annotated[DecimalStr, AfterValidator(_non_negative)]


def quantize(value: Decimal) -> Decimal:
    """Round to cents, banker's rounding, as accounting does."""
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN)


def parse_decimal(value: object) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{value!r} is not a decimal number") from exc
    return _finite(result)


class Money(BaseModel):
    """An amount in one currency; arithmetic refuses to mix currencies."""

    model_config = ConfigDict(frozen=True)

    amount: Amount
    currency: CurrencyCode

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(amount=self.amount + other.amount, currency=self.currency)

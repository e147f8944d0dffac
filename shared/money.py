"""Money as a decimal amount with an ISO 4217 currency; never a float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
_CENT = Decimal("0.01")

# An amount is at most 10^12 in absolute value: far above any invoice an agency sends, and
# well inside what every column, sum and quantize() holds (NUMERIC(20, 4); 28 digits of
# decimal precision). 1e30 raised decimal.InvalidOperation in quantize() (a 500), and a deal
# line of 1e30 was won in leads while billing dead-lettered its deal.won.
MAX_AMOUNT = Decimal(10) ** 12
# Decimals an amount may have without a currency to say: the scale the money columns keep.
MAX_DECIMALS = 4
# ISO 4217 minor units of the currencies that do not have two (no library in the environment
# carries them: pycountry has codes and names only). Funds and metals (XAU, XDR...) have none
# defined and take the default.
_MINOR_UNITS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def _currency(code: str) -> str:
    code = code.strip().upper()
    if code not in _CURRENCIES:
        raise ValueError(f"unknown currency {code!r}: use an ISO 4217 code such as EUR or USD")
    return code


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    return value


def _bounded(value: Decimal) -> Decimal:
    if abs(value) > MAX_AMOUNT:
        raise ValueError("must be at most 10^12 in absolute value")
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
# A decimal from outside (an amount, hours, a percent): finite and at most 10^12 either way.
Bounded = Annotated[
    DecimalStr,
    AfterValidator(_bounded),
    Field(description="decimal number as a string, at most 10^12 either way", examples=["1250.00"]),
]
Amount = Annotated[Bounded, AfterValidator(_non_negative)]


_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def minor_units(currency: str) -> int:
    """Decimals an amount in ``currency`` may have (ISO 4217): 2 for most, 0 for JPY, 3 for KWD."""
    return _MINOR_UNITS.get(currency, 2)


def in_currency(value: Decimal | None, currency: str | None) -> Decimal | None:
    """``value`` if it has no more decimals than ``currency`` allows (MAX_DECIMALS without a
    currency); ValueError otherwise. For validators of models that carry the currency."""
    if value is None:
        return None
    places = minor_units(currency) if currency else MAX_DECIMALS
    # Compared, not counted: "12.50" has two decimal places but needs one. The quantize is
    # exact for a bounded value (at most 17 digits).
    if value.quantize(Decimal(1).scaleb(-places)) != value:
        unit = f"{currency} amounts have" if currency else "an amount has"
        allowed = "no decimals" if places == 0 else f"at most {_WORDS[places]} decimal places"
        raise ValueError(f"{unit} {allowed}, not {str(value)[:40]}")
    return value


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

"""The card gateway port: how a dunning retry asks the payment provider to charge again.

Billing holds no card data; a retry is a request to the provider, whose answer comes back
either at once (``ChargeResult``) or later through the signed webhook (``None``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ChargeRequest:
    invoice_id: uuid.UUID
    lead_id: uuid.UUID
    amount: Decimal
    currency: str
    attempt: int


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    reference: str
    decline_code: str | None = None


class CardGateway(Protocol):
    async def charge(self, request: ChargeRequest) -> ChargeResult | None: ...


class NoGateway:
    """No provider wired in: the retry is recorded as due and its outcome arrives by webhook."""

    async def charge(self, request: ChargeRequest) -> ChargeResult | None:
        return None


@dataclass(frozen=True)
class ProviderEvent:
    """One verified event of the payment provider (``payment.succeeded``, ``payment.failed``),
    as the webhook's use case takes it: the provider's event id, applied once, and the charge."""

    event_id: str
    type: str
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: str
    reference: str | None
    decline_code: str | None

"""Billing's HTTP request and response bodies (JSON names fixed by DESIGN.md).

Money goes out as decimal strings with two decimals and its currency.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.billing.domain import PAYMENT_METHODS
from shared.money import CurrencyCode, DecimalStr


class PaymentIn(BaseModel):
    """A payment recorded by hand (a bank transfer seen on the statement, cash, a cheque).
    Partial payments add up; a surplus is credited to the client's balance."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    invoice_id: uuid.UUID
    # Not ``Amount``: zero and negative amounts reach the use case, which refuses them with
    # the one message every caller sees ("amount must be greater than zero").
    amount: DecimalStr = Field(examples=["250.00"])
    currency: CurrencyCode
    method: str = Field(
        examples=["bank_transfer"], description="one of " + ", ".join(sorted(PAYMENT_METHODS))
    )
    reference: str | None = Field(default=None, max_length=200, examples=["TRF-2026-0042"])

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        value = value.lower()
        if value not in PAYMENT_METHODS:
            raise ValueError(f"unknown method {value!r}; known: {', '.join(sorted(PAYMENT_METHODS))}")
        return value


class PaymentOut(BaseModel):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: DecimalStr
    currency: str
    method: str
    reference: str | None
    applied: DecimalStr = Field(description="the part of the payment that went to the invoice")
    credited: DecimalStr = Field(description="overpayment credited to the client's balance")
    credit_balance: DecimalStr = Field(description="the client's credit balance in this currency now")
    invoice_status: str
    amount_due: DecimalStr
    days_late: int
    paid_at: datetime


class InvoiceLineOut(BaseModel):
    description: str
    quantity: DecimalStr
    amount: DecimalStr


class InvoicePaymentOut(BaseModel):
    payment_id: uuid.UUID
    amount: DecimalStr
    applied: DecimalStr
    credited: DecimalStr
    method: str
    paid_at: datetime
    days_late: int


class InvoiceOut(BaseModel):
    invoice_id: uuid.UUID
    number: str
    kind: str
    status: str = Field(description="open | paid | void")
    lead_id: uuid.UUID
    deal_id: uuid.UUID | None
    subscription_id: uuid.UUID | None
    currency: str
    amount: DecimalStr
    amount_paid: DecimalStr
    amount_due: DecimalStr
    issued_at: datetime
    due_at: datetime
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    lines: list[InvoiceLineOut]
    payments: list[InvoicePaymentOut] = Field(default_factory=list)


class VoidIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class AuthorizationOut(BaseModel):
    """Whether work on a deal may start: only once its deposit is fully paid."""

    deal_id: uuid.UUID
    lead_id: uuid.UUID
    may_start: bool
    deposit_invoice_id: uuid.UUID
    deposit_status: str = Field(description="the deposit invoice's status: open | paid | void")
    deposit_amount: DecimalStr
    deposit_cleared_at: datetime | None
    amount_due: DecimalStr
    currency: str


class SubscriptionOut(BaseModel):
    subscription_id: uuid.UUID
    lead_id: uuid.UUID
    deal_id: uuid.UUID
    status: str = Field(description="pending | active | paused | cancelled")
    currency: str
    monthly_fee: DecimalStr
    included_hours: DecimalStr | None
    hourly_rate: DecimalStr | None
    started_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    paused_fee: DecimalStr | None
    paused_until: datetime | None
    cancelled_at: datetime | None

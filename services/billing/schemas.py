"""Billing's HTTP request and response bodies (JSON names fixed by docs/design.md, "HTTP surface").

Money goes out as decimal strings with two decimals and its currency. Response bodies that
mirror a row or a use case's result one to one are read from it (``from_attributes``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.billing.domain import PAYMENT_METHODS
from shared.bounds import Day, Moment
from shared.money import Bounded, CurrencyCode, DecimalStr, in_currency, quantize

# Money answered in cents (banker's rounding), whatever scale the row keeps it in.
Cents = Annotated[DecimalStr, AfterValidator(quantize)]


def _in_its_currency(value: Decimal | None, info: ValidationInfo) -> Decimal | None:
    """The amount, if it has no more decimals than the model's ``currency`` allows (declared
    before the amount, so it is in ``info.data``); four without a valid currency."""
    return in_currency(value, info.data.get("currency"))


class PaymentIn(BaseModel):
    """A payment recorded by hand (a bank transfer seen on the statement, cash, a cheque).
    Partial payments add up; a surplus is credited to the client's balance."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    invoice_id: uuid.UUID
    currency: CurrencyCode
    # Not ``Amount``: zero and negative amounts reach the use case, which refuses them with
    # the one message every caller sees ("amount must be greater than zero").
    amount: Bounded = Field(examples=["250.00"])
    method: str = Field(examples=["bank_transfer"], description="one of " + ", ".join(sorted(PAYMENT_METHODS)))
    reference: str | None = Field(default=None, max_length=200, examples=["TRF-2026-0042"])

    _amount = field_validator("amount")(_in_its_currency)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        value = value.lower()
        if value not in PAYMENT_METHODS:
            raise ValueError(f"unknown method {value!r}; known: {', '.join(sorted(PAYMENT_METHODS))}")
        return value


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    model_config = ConfigDict(from_attributes=True)

    description: str
    quantity: DecimalStr
    amount: Cents


class InvoicePaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    payment_id: uuid.UUID = Field(validation_alias=AliasChoices("payment_id", "id"))
    amount: Cents
    applied: Cents
    credited: Cents
    method: str
    paid_at: datetime = Field(validation_alias=AliasChoices("paid_at", "received_at"))
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
    amount_credited: DecimalStr = Field(description="lowered by credit notes")
    amount_due: DecimalStr
    period_start: datetime | None = Field(default=None, description="service period billed (retainers)")
    period_end: datetime | None = None
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


class PeriodHoursOut(BaseModel):
    """One retainer period's hours: used against included, and over."""

    period_start: datetime
    period_end: datetime | None = Field(description="null for hours recorded in a period not billed yet")
    used_hours: DecimalStr
    included_hours: DecimalStr | None
    overage_hours: DecimalStr
    current: bool = Field(description="the period still running")


class SubscriptionOfferOut(BaseModel):
    """A save offer that bills: the periods starting in [starts_at, ends_at) are billed at `fee`."""

    kind: str = Field(description="discount or downgrade")
    fee: DecimalStr | None = Field(description="the monthly fee during the offer")
    discount_percent: DecimalStr | None = Field(default=None, description="the discount, for a discount")
    included_hours: DecimalStr | None = Field(default=None, description="hours included a month, for a downgrade")
    starts_at: datetime | None = Field(description="the first period at the offer's fee starts here")
    ends_at: datetime | None = Field(description="the full fee returns for periods starting here")


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
    offer: SubscriptionOfferOut | None = Field(
        default=None, description="a discount or downgrade in force or ahead (a save offer that bills)"
    )
    cancelled_at: datetime | None
    dunning_state: str | None = Field(default=None, description="worst dunning state of its unpaid invoices")
    service_blocked: bool = Field(default=False, description="dunning reached `blocked`: hold the work")


class WebhookData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    invoice_id: uuid.UUID
    currency: CurrencyCode
    amount: Bounded
    method: str = Field(default="card", max_length=32)
    reference: str | None = Field(default=None, max_length=200, description="the provider's charge id")
    decline_code: str | None = Field(default=None, max_length=60, examples=["insufficient_funds", "expired_card"])

    _amount = field_validator("amount")(_in_its_currency)


class WebhookIn(BaseModel):
    """A payment provider's event, signed in the `Clientflow-Signature` header."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200, description="the provider's event id; a replay is applied once")
    type: str = Field(max_length=60, examples=["payment.succeeded", "payment.failed"])
    data: WebhookData


class CreditNoteIn(BaseModel):
    currency: CurrencyCode
    amount: Bounded = Field(examples=["100.00"])
    reason: str = Field(min_length=1, max_length=1000)
    refund: bool = Field(default=False, description="pay the already-paid part back instead of crediting the balance")

    _amount = field_validator("amount")(_in_its_currency)


class CreditNoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    credit_note_id: uuid.UUID = Field(validation_alias=AliasChoices("credit_note_id", "id"))
    number: str
    invoice_id: uuid.UUID
    lead_id: uuid.UUID
    currency: str
    amount: Cents
    reduces_due: Cents
    refunded: Cents
    credited: Cents
    reason: str
    issued_at: datetime


class TimeEntryIn(BaseModel):
    subscription_id: uuid.UUID
    hours: Bounded = Field(examples=["2.5"])
    description: str | None = Field(default=None, max_length=1000)
    change_order_id: uuid.UUID | None = Field(default=None, description="the change order this work delivers")


class TimeEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    time_entry_id: uuid.UUID
    subscription_id: uuid.UUID
    hours: DecimalStr
    period_start: datetime
    period_end: datetime | None
    used_hours: DecimalStr = Field(description="hours recorded in this period so far")
    included_hours: DecimalStr | None
    overage_hours: DecimalStr = Field(description="billed at the hourly rate on the next invoice")


class PriceChangeIn(BaseModel):
    """A price change from a date: `percent` (10 = +10 %) or `new_price` with its currency."""

    percent: Bounded | None = None
    currency: CurrencyCode | None = None
    new_price: Bounded | None = None
    effective_at: Moment | Day = Field(description="a date is midnight UTC")
    subscription_ids: list[uuid.UUID] | None = Field(default=None, description="none: every running subscription")
    grandfathered: list[uuid.UUID] = Field(default_factory=list, description="subscriptions that keep their price")

    _new_price = field_validator("new_price")(_in_its_currency)

    @property
    def effective(self) -> datetime:
        value = self.effective_at
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.combine(value, time(0), tzinfo=UTC)


class ScheduledPriceOut(BaseModel):
    subscription_id: uuid.UUID
    old_price: DecimalStr
    new_price: DecimalStr


class PriceChangeOut(BaseModel):
    price_change_id: uuid.UUID
    effective_at: datetime
    notice_dates: list[datetime]
    subscriptions: list[ScheduledPriceOut]
    grandfathered: list[uuid.UUID]


class ProjectInvoiceIn(BaseModel):
    kind: Literal["milestone", "final"]
    amount: Bounded | None = Field(default=None, description="a milestone's amount; the final invoice is the balance")
    description: str | None = Field(default=None, max_length=1000)

    _amount = field_validator("amount")(_in_its_currency)


class ChangeOrderOut(BaseModel):
    request_id: uuid.UUID
    deal_id: uuid.UUID
    lead_id: uuid.UUID
    description: str | None
    in_scope: bool
    hours: DecimalStr | None
    amount: DecimalStr
    currency: str
    status: str = Field(description="in_scope | proposed | invoiced | rejected")
    invoice_id: uuid.UUID | None
    work_done_at: datetime | None
    leaked: bool


class LeakedRevenueOut(BaseModel):
    totals: dict[str, DecimalStr]
    change_orders: list[ChangeOrderOut]

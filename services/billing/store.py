"""Billing's own tables and the small repository helpers that need SQL.

Invoices are immutable once issued: only their payment state (``amount_paid``, ``status``,
``paid_at``) and voiding may change; lines never change. Corrections are a void and a new
invoice, so every number once issued stays what the client received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, MetaData, String, Text, event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import NAMING, Money, UTCDateTime, ensure_row


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """A client as billing knows it: the billing contact is the person who signed (the only
    personal data billing keeps, and it is erased on request)."""

    __tablename__ = "accounts"

    lead_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    contact_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # From retention's client.tier_changed: a `best` client gets a longer dunning grace.
    tier: Mapped[str | None] = mapped_column(String(20), default=None)
    # From nurture's takeover.started/ended: a human handles the client, reminders wait.
    takeover_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # From leads' lead.captured: the company account the client belongs to (GET /invoices?account_id=).
    account_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)


class InvoiceCounter(Base):
    """The last invoice number used per year; incremented in the invoice's own transaction, so
    a rolled-back invoice gives its number back and the sequence has no gaps."""

    __tablename__ = "invoice_counters"

    year: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(default=0)


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    lead_id: Mapped[uuid.UUID]  # indexed by ix_invoices_lead_issued (a client's invoices in order)
    kind: Mapped[str] = mapped_column(String(20))
    deal_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money())
    amount_paid: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0.00"))
    # Lowered by credit notes on the unpaid part (a correction, never an edit of the invoice).
    amount_credited: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0.00"), server_default="0")
    status: Mapped[str] = mapped_column(String(10), index=True)  # open | paid | void
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The service period a subscription or overage invoice bills (none for a deposit).
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    void_reason: Mapped[str | None] = mapped_column(Text, default=None)

    lines: Mapped[list[InvoiceLine]] = relationship(
        order_by="InvoiceLine.position", lazy="selectin", cascade="save-update, merge"
    )

    __table_args__ = (Index("ix_invoices_lead_issued", "lead_id", "issued_at"),)


# What an issued invoice says to the client; changing any of them is refused.
IMMUTABLE_INVOICE_FIELDS = (
    "number",
    "lead_id",
    "kind",
    "deal_id",
    "subscription_id",
    "currency",
    "amount",
    "issued_at",
    "due_at",
    "period_start",
    "period_end",
)


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int]
    description: Mapped[str] = mapped_column(String(1000))
    quantity: Mapped[Decimal] = mapped_column(Money())
    amount: Mapped[Decimal] = mapped_column(Money())


class Payment(Base):
    """Money received against an invoice; ``applied + credited == amount``."""

    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), index=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    applied: Mapped[Decimal] = mapped_column(Money())
    credited: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(32))
    # Free text from a bank statement may name a person: erased with the client's data.
    reference: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20), default="manual")  # manual | webhook
    # The payment provider's id, so a replayed webhook is recognised (unique when present).
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    days_late: Mapped[int] = mapped_column(default=0)


class CreditBalance(Base):
    """Money a client has with us beyond what was invoiced, per currency (never mixed)."""

    __tablename__ = "credit_balances"

    lead_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0.00"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Deal(Base):
    """A won deal as billing sees it: its deposit, and whether work may start."""

    __tablename__ = "deals"

    deal_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300))
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Money())
    signed_by: Mapped[str | None] = mapped_column(String(200))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deposit_share: Mapped[Decimal] = mapped_column(Money())
    deposit_amount: Mapped[Decimal] = mapped_column(Money())
    deposit_invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), unique=True)
    # A relationship (not only the key) so the flush writes the invoice before the deal.
    deposit_invoice: Mapped[Invoice] = relationship(lazy="selectin")
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The lead's acquisition channel from deal.won: write-offs are reported per channel.
    channel: Mapped[str | None] = mapped_column(String(60), default=None)


class Subscription(Base):
    """A retainer: pending until its deposit clears, then billed monthly (a later issue)."""

    __tablename__ = "subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    deal_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(String(12), index=True)  # pending|active|paused|cancelled
    currency: Mapped[str] = mapped_column(String(3))
    monthly_fee: Mapped[Decimal] = mapped_column(Money())
    included_hours: Mapped[Decimal | None] = mapped_column(Money())
    hourly_rate: Mapped[Decimal | None] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    paused_fee: Mapped[Decimal | None] = mapped_column(Money(), default=None)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    cancel_effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    cancel_reason: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The worst dunning state of its unpaid invoices (None: nothing to chase).
    dunning_state: Mapped[str | None] = mapped_column(String(12), default=None)
    # A save offer that bills (a discount or a downgrade) for the periods starting in
    # [offer_from, offer_until): its kind, the fee then, the percent off and the hours included.
    offer_kind: Mapped[str | None] = mapped_column(String(12), default=None)
    offer_fee: Mapped[Decimal | None] = mapped_column(Money(), default=None)
    offer_percent: Mapped[Decimal | None] = mapped_column(Money(), default=None)
    offer_included_hours: Mapped[Decimal | None] = mapped_column(Money(), default=None)
    offer_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    offer_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class BilledPeriod(Base):
    """One row per retainer period billed: its key makes "exactly once per period" hold
    across restarts, clock jumps and two instances racing."""

    __tablename__ = "billed_periods"

    subscription_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("invoices.id"))
    fee: Mapped[Decimal] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(12))  # the subscription's status when billed
    usage_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Hours included in this period when they differ from the subscription's (a downgrade).
    included_hours: Mapped[Decimal | None] = mapped_column(Money(), default=None)


class TimeEntry(Base):
    """Hours worked on a retainer, counted against the period's included hours."""

    __tablename__ = "time_entries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(index=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    hours: Mapped[Decimal] = mapped_column(Money())
    description: Mapped[str | None] = mapped_column(String(1000))
    change_order_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    worked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_time_entries_period", "subscription_id", "period_start"),)


class ChangeOrder(Base):
    """A change requested on a deal: in scope (no charge) or a priced change order."""

    __tablename__ = "change_orders"

    request_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    deal_id: Mapped[uuid.UUID] = mapped_column(index=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    description: Mapped[str | None] = mapped_column(Text)
    in_scope: Mapped[bool]
    hours: Mapped[Decimal | None] = mapped_column(Money())
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    # in_scope | proposed | invoiced | rejected
    status: Mapped[str] = mapped_column(String(12), index=True)
    work_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("invoices.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class CreditNoteCounter(Base):
    """Credit notes have their own gapless yearly sequence (CN-2026-000001)."""

    __tablename__ = "credit_note_counters"

    year: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(default=0)


class CreditNote(Base):
    """A correction of an issued invoice (which itself never changes)."""

    __tablename__ = "credit_notes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(24), unique=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), index=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money())
    reduces_due: Mapped[Decimal] = mapped_column(Money())
    refunded: Mapped[Decimal] = mapped_column(Money())
    credited: Mapped[Decimal] = mapped_column(Money())
    reason: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WriteOff(Base):
    """A won project ended as a loss (one per deal): what it was worth, what was paid, and the
    difference written off, with the invoices voided and credit notes issued to close it."""

    __tablename__ = "write_offs"

    deal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deals.deal_id"), primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    channel: Mapped[str | None] = mapped_column(String(60), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    worth: Mapped[Decimal] = mapped_column(Money())
    paid: Mapped[Decimal] = mapped_column(Money())
    amount: Mapped[Decimal] = mapped_column(Money())
    reason: Mapped[str] = mapped_column(Text)
    voided_invoice_ids: Mapped[list[str]] = mapped_column(JSON)
    credit_note_ids: Mapped[list[str]] = mapped_column(JSON)
    written_off_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookEvent(Base):
    """Provider event ids already applied: a replayed webhook changes nothing."""

    __tablename__ = "webhook_events"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DunningCase(Base):
    """An unpaid invoice being chased: card failures, retries, grace, the overdue ladder."""

    __tablename__ = "dunning_cases"

    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"), primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    state: Mapped[str | None] = mapped_column(String(12), default=None)
    open: Mapped[bool] = mapped_column(default=True, index=True)
    failures: Mapped[int] = mapped_column(default=0)
    retries_done: Mapped[int] = mapped_column(default=0)
    first_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    hard_declined: Mapped[bool] = mapped_column(default=False)
    last_decline_code: Mapped[str | None] = mapped_column(String(60), default=None)
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    overdue_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PriceChange(Base):
    __tablename__ = "price_changes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    percent: Mapped[Decimal | None] = mapped_column(Money())
    new_price: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduledPrice(Base):
    """A subscription's new fee from a date; applied to the first period starting on or after it."""

    __tablename__ = "scheduled_prices"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    price_change_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("price_changes.id"), index=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(index=True)
    old_fee: Mapped[Decimal] = mapped_column(Money())
    new_fee: Mapped[Decimal] = mapped_column(Money())
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# --------------------------------------------------------------------------- immutability


class Termination(Base):
    """The agency ended a client's relationship (``client.terminated``): at ``effective_at`` every
    running subscription ends and the final invoice is issued (services/billing/terminations.py)."""

    __tablename__ = "terminations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(String(40))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(12), index=True)  # notice | ended
    final_invoice_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ImmutableInvoice(RuntimeError):
    """A bug, not a user error: code tried to rewrite an issued invoice."""


@event.listens_for(Invoice, "before_update")
def _invoice_stays_as_issued(_mapper: Any, _connection: Any, target: Invoice) -> None:
    state = inspect(target)
    changed = [name for name in IMMUTABLE_INVOICE_FIELDS if state.attrs[name].history.has_changes()]
    if changed:
        raise ImmutableInvoice(f"invoice {target.number} is issued; cannot change {', '.join(changed)}")


@event.listens_for(Invoice, "before_delete")
@event.listens_for(InvoiceLine, "before_update")
@event.listens_for(InvoiceLine, "before_delete")
def _no_rewrite(_mapper: Any, _connection: Any, target: Any) -> None:
    raise ImmutableInvoice(f"issued invoices and their lines are never rewritten or deleted ({target!r})")


# --------------------------------------------------------------------------- repository


async def next_invoice_sequence(
    session: AsyncSession, year: int, *, next_of: Callable[[int], int], memo: dict[str, Any]
) -> int:
    """Take the year's next number. The counter row stays locked (FOR UPDATE on PostgreSQL,
    the write lock on SQLite) until the invoice commits, so numbers are never shared. It is read
    and locked once per transaction (``memo``, the unit of work's): later invoices of the same
    transaction count on from the row in memory, written once at the flush."""
    counters: dict[int, InvoiceCounter] = memo.setdefault("billing.invoice_counters", {})
    counter = counters.get(year)
    if counter is None:
        locked = select(InvoiceCounter).where(InvoiceCounter.year == year).with_for_update()
        counter = await session.scalar(locked)
        if counter is None:  # the year's first invoice
            await ensure_row(session, InvoiceCounter, {"year": year, "last_number": 0})
            counter = await session.scalar(locked)
        assert counter is not None
        counters[year] = counter
    counter.last_number = next_of(counter.last_number)
    return counter.last_number


async def next_credit_note_sequence(session: AsyncSession, year: int) -> int:
    """Take the year's next credit-note number (their own sequence), locked until commit."""
    await ensure_row(session, CreditNoteCounter, {"year": year, "last_number": 0})
    counter = await session.scalar(select(CreditNoteCounter).where(CreditNoteCounter.year == year).with_for_update())
    assert counter is not None
    counter.last_number += 1
    return counter.last_number


async def locked_credit_balance(
    session: AsyncSession, *, lead_id: uuid.UUID, currency: str, now: datetime
) -> CreditBalance:
    """The client's balance row in ``currency``, created at 0 if new, locked until commit."""
    await ensure_row(
        session,
        CreditBalance,
        {"lead_id": lead_id, "currency": currency, "balance": Decimal("0.00"), "updated_at": now},
    )
    balance = await session.scalar(
        select(CreditBalance)
        .where(CreditBalance.lead_id == lead_id, CreditBalance.currency == currency)
        .with_for_update()
    )
    assert balance is not None
    return balance

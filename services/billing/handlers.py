"""Billing's use cases: one async function per thing that can happen.

Each runs inside the caller's unit of work: state changes and the events they cause commit
together (the outbox), so nothing is announced that was not recorded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update

from services.billing import domain, store
from services.billing.schemas import PaymentIn, PaymentOut
from services.billing.settings import Settings
from services.billing.store import Account, CreditBalance, Deal, Invoice, InvoiceLine, Payment, Subscription
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.money import quantize
from shared.uow import UnitOfWork

# --------------------------------------------------------------------------- invoices


async def issue_invoice(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID,
    kind: str,
    currency: str,
    lines: list[ev.InvoiceLine],
    due_in_days: int,
    deal_id: uuid.UUID | None = None,
    subscription_id: uuid.UUID | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> Invoice:
    """Issue an invoice (``invoice.issued``) with the year's next number, taken in this same
    transaction so a rollback gives the number back. An invoice of nothing is paid at issue."""
    now = tx.now()
    amount = quantize(sum((line.amount for line in lines), Decimal(0)))
    sequence = await store.next_invoice_sequence(tx.session, now.year, next_of=domain.next_sequence)
    status = domain.invoice_status(amount=amount, amount_paid=Decimal("0.00"), voided=False)
    invoice = Invoice(
        id=uuid.uuid4(),
        number=domain.invoice_number(now.year, sequence),
        lead_id=lead_id,
        kind=kind,
        deal_id=deal_id,
        subscription_id=subscription_id,
        currency=currency,
        amount=amount,
        amount_paid=Decimal("0.00"),
        status=status,
        issued_at=now,
        due_at=domain.due_date(now, days=due_in_days),
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
        paid_at=now if status == "paid" else None,
        lines=[
            InvoiceLine(position=i, description=line.description, quantity=line.quantity, amount=line.amount)
            for i, line in enumerate(lines, start=1)
        ],
    )
    tx.session.add(invoice)
    tx.emit(
        "invoice.issued",
        ev.InvoiceIssued(
            invoice_id=invoice.id,
            number=invoice.number,
            kind=kind,  # type: ignore[arg-type]
            deal_id=deal_id,
            subscription_id=subscription_id,
            amount=amount,
            currency=currency,
            issued_at=invoice.issued_at,
            due_at=invoice.due_at,
            lines=lines,
        ),
        lead_id=lead_id,
    )
    return invoice


async def get_invoice(tx: UnitOfWork, invoice_id: uuid.UUID) -> Invoice:
    invoice = await tx.session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice


async def list_invoices(
    tx: UnitOfWork, *, lead_id: uuid.UUID | None, status: str | None, limit: int, offset: int
) -> tuple[list[Invoice], int]:
    query = select(Invoice)
    if lead_id is not None:
        query = query.where(Invoice.lead_id == lead_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    total = await tx.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await tx.session.scalars(query.order_by(Invoice.number).limit(limit).offset(offset))
    return list(rows), total or 0


async def invoice_payments(tx: UnitOfWork, invoice_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Payment]]:
    found: dict[uuid.UUID, list[Payment]] = {invoice_id: [] for invoice_id in invoice_ids}
    if invoice_ids:
        rows = await tx.session.scalars(
            select(Payment).where(Payment.invoice_id.in_(invoice_ids)).order_by(Payment.received_at, Payment.id)
        )
        for payment in rows:
            found[payment.invoice_id].append(payment)
    return found


async def void_invoice(tx: UnitOfWork, invoice_id: uuid.UUID, *, reason: str) -> Invoice:
    """Void an open invoice nothing was paid on. The invoice keeps its number and lines (the
    sequence keeps no gap); it only stops being payable. Voiding twice is a no-op."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    if invoice.status == "void":
        return invoice
    domain.void_check(status=invoice.status, amount_paid=invoice.amount_paid)
    invoice.status = "void"
    invoice.voided_at = tx.now()
    invoice.void_reason = reason
    tx.emit(
        "invoice.voided",
        ev.InvoiceVoided(invoice_id=invoice.id, number=invoice.number, reason=reason, voided_at=invoice.voided_at),
        lead_id=invoice.lead_id,
    )
    return invoice


# --------------------------------------------------------------------------- deals and deposits


async def _account(tx: UnitOfWork, lead_id: uuid.UUID) -> Account:
    account = await tx.session.get(Account, lead_id)
    if account is None:
        now = tx.now()
        account = Account(lead_id=lead_id, contact_name=None, created_at=now, updated_at=now)
        tx.session.add(account)
    return account


async def open_deposit_invoice(
    tx: UnitOfWork, *, settings: Settings, lead_id: uuid.UUID | None, won: ev.DealWon
) -> Deal:
    """A deal was won: issue its deposit invoice (``invoice.issued``), keep the deal's work
    authorization, and for a retainer a ``pending`` subscription that starts when the deposit
    clears. A deposit of nothing clears at once (``deposit.cleared``). The same deal won
    twice (a new event for it) opens nothing more."""
    if lead_id is None:
        raise Invalid(f"deal.won for deal {won.deal_id} has no lead_id: billing needs the client")
    existing = await tx.session.get(Deal, won.deal_id)
    if existing is not None:
        return existing
    amount = domain.deposit_amount(
        kind=won.kind, total=won.total, monthly_fee=won.monthly_fee, deposit_share=won.deposit_share
    )
    now = tx.now()
    account = await _account(tx, lead_id)
    # An erased client keeps no name here, even if one still travels in an event.
    signed_by = None if account.erased_at else won.signed_by
    if account.erased_at is None:
        account.contact_name = won.signed_by
        account.updated_at = now

    subscription: Subscription | None = None
    if won.kind == "retainer":
        assert won.monthly_fee is not None  # deposit_amount refused a retainer without it
        subscription = Subscription(
            id=uuid.uuid4(),
            lead_id=lead_id,
            deal_id=won.deal_id,
            status="pending",
            currency=won.currency,
            monthly_fee=quantize(won.monthly_fee),
            included_hours=won.included_hours,
            hourly_rate=won.hourly_rate,
            created_at=now,
            updated_at=now,
        )
        tx.session.add(subscription)

    invoice = await issue_invoice(
        tx,
        lead_id=lead_id,
        kind="deposit",
        currency=won.currency,
        lines=[
            ev.InvoiceLine(
                description=domain.deposit_line(kind=won.kind, title=won.title, deposit_share=won.deposit_share),
                quantity=Decimal(1),
                amount=amount,
            )
        ],
        due_in_days=settings.deposit_due_days,
        deal_id=won.deal_id,
        subscription_id=subscription.id if subscription else None,
    )
    deal = Deal(
        deal_id=won.deal_id,
        lead_id=lead_id,
        kind=won.kind,
        title=won.title,
        currency=won.currency,
        total=won.total,
        signed_by=signed_by,
        signed_at=won.signed_at,
        deposit_share=won.deposit_share,
        deposit_amount=amount,
        deposit_invoice=invoice,
        subscription_id=subscription.id if subscription else None,
        created_at=now,
    )
    tx.session.add(deal)
    if invoice.status == "paid":
        # No deposit asked (share 0): the deposit is recorded, as a paid invoice of nothing,
        # and clears now, so the deal may start and the funnel moves on as for a paid one.
        await _clear_deposit(tx, deal, invoice)
    return deal


async def _clear_deposit(tx: UnitOfWork, deal: Deal, invoice: Invoice) -> None:
    """Work may start (``deposit.cleared``, exactly once per deal); a retainer starts."""
    if deal.cleared_at is not None:
        return
    now = tx.now()
    deal.cleared_at = now
    tx.emit(
        "deposit.cleared",
        ev.DepositCleared(
            deal_id=deal.deal_id,
            invoice_id=invoice.id,
            amount=invoice.amount,
            currency=invoice.currency,
            cleared_at=now,
        ),
        lead_id=deal.lead_id,
    )
    if deal.subscription_id is not None:
        subscription = await tx.session.get(Subscription, deal.subscription_id)
        if subscription is not None and subscription.status == "pending":
            start_subscription(tx, subscription)


def start_subscription(tx: UnitOfWork, subscription: Subscription) -> None:
    """The retainer runs from now (``subscription.started``); its first period is one month."""
    now = tx.now()
    subscription.status = domain.transition(subscription.status, "activate")
    subscription.started_at = now
    subscription.current_period_start = now
    subscription.current_period_end = domain.add_months(now, 1)
    subscription.updated_at = now
    tx.emit(
        "subscription.started",
        ev.SubscriptionStarted(
            subscription_id=subscription.id,
            deal_id=subscription.deal_id,
            monthly_fee=subscription.monthly_fee,
            currency=subscription.currency,
            included_hours=subscription.included_hours,
            started_at=now,
        ),
        lead_id=subscription.lead_id,
    )


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> tuple[Deal, Invoice]:
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id} in billing (billing learns of a deal when it is won)")
    return deal, deal.deposit_invoice


# --------------------------------------------------------------------------- payments


async def record_payment(tx: UnitOfWork, data: PaymentIn) -> PaymentOut:
    """Record money received against an invoice (``payment.succeeded``). Partial payments add
    up; a surplus is credited to the client's balance. The payment that settles a deposit
    clears it (``deposit.cleared``) and, for a retainer, starts the subscription."""
    # Locked so two payments at once cannot both read the same amount already paid.
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == data.invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {data.invoice_id}")
    application = domain.apply_payment(
        invoice_amount=invoice.amount,
        invoice_currency=invoice.currency,
        already_paid=invoice.amount_paid,
        status=invoice.status,
        amount=data.amount,
        currency=data.currency,
    )
    now = tx.now()
    late = domain.days_late(due_at=invoice.due_at, paid_at=now)
    payment = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        lead_id=invoice.lead_id,
        amount=data.amount,
        applied=application.applied,
        credited=application.credited,
        currency=data.currency,
        method=data.method,
        reference=data.reference,
        source="manual",
        received_at=now,
        days_late=late,
    )
    tx.session.add(payment)
    invoice.amount_paid = application.amount_paid
    invoice.status = application.status
    if application.settles:
        invoice.paid_at = now
    balance = await _credit(tx, lead_id=invoice.lead_id, currency=data.currency, amount=application.credited)
    tx.emit(
        "payment.succeeded",
        ev.PaymentSucceeded(
            payment_id=payment.id,
            invoice_id=invoice.id,
            amount=data.amount,
            currency=data.currency,
            method=data.method,
            reference=data.reference,
            paid_at=now,
            days_late=late,
            invoice_paid=application.status == "paid",
            applied=application.applied,
            credited=application.credited,
        ),
        lead_id=invoice.lead_id,
    )
    if application.settles and invoice.kind == "deposit" and invoice.deal_id is not None:
        deal = await tx.session.scalar(select(Deal).where(Deal.deal_id == invoice.deal_id).with_for_update())
        if deal is not None:
            await _clear_deposit(tx, deal, invoice)
    return PaymentOut(
        payment_id=payment.id,
        invoice_id=invoice.id,
        amount=quantize(payment.amount),
        currency=payment.currency,
        method=payment.method,
        reference=payment.reference,
        applied=quantize(application.applied),
        credited=quantize(application.credited),
        credit_balance=quantize(balance),
        invoice_status=application.status,
        amount_due=quantize(application.amount_due),
        days_late=late,
        paid_at=now,
    )


async def _credit(tx: UnitOfWork, *, lead_id: uuid.UUID, currency: str, amount: Decimal) -> Decimal:
    """Add ``amount`` to the client's credit in ``currency``; returns the balance."""
    if amount <= 0:
        row = await tx.session.get(CreditBalance, (lead_id, currency))
        return row.balance if row else Decimal("0.00")
    now = tx.now()
    row = await store.locked_credit_balance(tx.session, lead_id=lead_id, currency=currency, now=now)
    row.balance = row.balance + amount
    row.updated_at = now
    return row.balance


# --------------------------------------------------------------------------- subscriptions


async def list_subscriptions(tx: UnitOfWork, lead_id: uuid.UUID | None) -> list[Subscription]:
    query = select(Subscription)
    if lead_id is not None:
        query = query.where(Subscription.lead_id == lead_id)
    rows = await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id))
    return list(rows)


async def _subscriptions_in(
    tx: UnitOfWork, lead_id: uuid.UUID, statuses: tuple[str, ...], *, only: uuid.UUID | None = None
) -> list[Subscription]:
    query = select(Subscription).where(Subscription.lead_id == lead_id, Subscription.status.in_(statuses))
    if only is not None:
        query = query.where(Subscription.id == only)
    rows = await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id).with_for_update())
    return list(rows)


async def cancel_subscriptions(
    tx: UnitOfWork,
    *,
    lead_id: uuid.UUID | None,
    reason: str,
    effective_at: datetime,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """The client left: end the named subscription, or all of theirs when none is named
    (``subscription.cancelled`` for each that had started, with its fee, so retention can
    count the churned MRR)."""
    if lead_id is None:
        return []
    now = tx.now()
    cancelled = await _subscriptions_in(tx, lead_id, ("pending", "active", "paused"), only=subscription_id)
    for subscription in cancelled:
        was = subscription.status
        subscription.status = domain.transition(was, "cancel")
        subscription.cancelled_at = now
        subscription.cancel_effective_at = effective_at
        subscription.cancel_reason = reason
        subscription.updated_at = now
        if was == "pending":
            # Never started, never in MRR: it is closed so a late deposit cannot start it,
            # but announcing a cancellation would count churn that never was.
            continue
        tx.emit(
            "subscription.cancelled",
            ev.SubscriptionCancelled(
                subscription_id=subscription.id,
                reason=reason,
                effective_at=effective_at,
                monthly_fee=subscription.monthly_fee,
                currency=subscription.currency,
            ),
            lead_id=lead_id,
        )
    return cancelled


async def apply_save_offer(
    tx: UnitOfWork, *, lead_id: uuid.UUID | None, offer: ev.SaveOffer, subscription_id: uuid.UUID | None = None
) -> list[Subscription]:
    """A client who wanted to leave took a save offer. A pause keeps the subscription at the
    offer's (low) fee until the offer's months run out (``subscription.paused``); a paused
    subscription is not churn. Discounts and downgrades change the price: not billed here yet."""
    if lead_id is None or offer.kind != "pause":
        return []
    now = tx.now()
    fee = quantize(offer.fee or Decimal(0))
    paused = await _subscriptions_in(tx, lead_id, ("active",), only=subscription_id)
    for subscription in paused:
        if offer.currency is not None and offer.currency != subscription.currency:
            raise Invalid(
                f"pause fee in {offer.currency} for subscription {subscription.id} billed in {subscription.currency}"
            )
        subscription.status = domain.transition(subscription.status, "pause")
        subscription.paused_at = now
        subscription.paused_fee = fee
        subscription.paused_until = domain.add_months(now, offer.months) if offer.months else None
        subscription.updated_at = now
        tx.emit(
            "subscription.paused",
            ev.SubscriptionPaused(
                subscription_id=subscription.id,
                paused_fee=fee,
                currency=subscription.currency,
                until=subscription.paused_until,
            ),
            lead_id=lead_id,
        )
    return paused


# --------------------------------------------------------------------------- privacy


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID | None) -> None:
    """Forget the person: the billing contact's name, who signed, free-text payment references.
    Invoices, payments and balances keep their amounts, tied to an anonymous ``lead_id``."""
    if lead_id is None:
        return
    now = tx.now()
    account = await _account(tx, lead_id)
    account.contact_name = None
    account.erased_at = account.erased_at or now
    account.updated_at = now
    await tx.session.execute(update(Deal).where(Deal.lead_id == lead_id).values(signed_by=None))
    await tx.session.execute(update(Payment).where(Payment.lead_id == lead_id).values(reference=None))

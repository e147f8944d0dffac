"""Billing's use cases: one async function per thing that can happen.

Each runs inside the caller's unit of work: state changes and the events they cause commit
together (the outbox), so nothing is announced that was not recorded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import InstrumentedAttribute, lazyload, raiseload

from services.billing import domain, store
from services.billing.context import Billing
from services.billing.schemas import CreditNoteIn, PaymentIn, PaymentOut
from services.billing.store import (
    Account,
    BilledPeriod,
    ChangeOrder,
    CreditBalance,
    CreditNote,
    Deal,
    DunningCase,
    Invoice,
    InvoiceLine,
    Payment,
    ScheduledPrice,
    Subscription,
    TimeEntry,
)
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound
from shared.events import Envelope
from shared.jobs import Pass
from shared.money import quantize
from shared.privacy import forget_person
from shared.uow import UnitOfWork, UnitOfWorkFactory

# The rows a transaction remembers by key (see ``_known``).
_Row = TypeVar("_Row", Account, Deal)

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
    hours_used: Decimal | None = None,
    included_hours: Decimal | None = None,
) -> Invoice:
    """Issue an invoice (``invoice.issued``) with the year's next number, taken in this same
    transaction so a rollback gives the number back. An invoice of nothing is paid at issue."""
    now = tx.now()
    amount = quantize(sum((line.amount for line in lines), Decimal(0)))
    sequence = await store.next_invoice_sequence(
        tx.session, now.year, next_of=domain.next_sequence, memo=tx.memo
    )
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
            hours_used=hours_used,
            included_hours=included_hours,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
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
    await close_dunning(tx, invoice, reason="void")
    tx.emit(
        "invoice.voided",
        ev.InvoiceVoided(invoice_id=invoice.id, number=invoice.number, reason=reason, voided_at=invoice.voided_at),
        lead_id=invoice.lead_id,
    )
    return invoice


# --------------------------------------------------------------------------- deals and deposits


def _known(tx: UnitOfWork, model: type[_Row]) -> dict[uuid.UUID, _Row | None]:
    """The accounts or deals this transaction has read, prefetched or created, by key, and the
    keys known to have none (None). A row created earlier in the transaction is pending, not in
    the identity map, so ``session.get`` would SELECT it (flushing everything first); only
    ``_account`` and ``open_deposit_invoice`` create these rows, and they record them here."""
    return tx.memo.setdefault(f"billing.known.{model.__tablename__}", {})


async def _get_known(tx: UnitOfWork, model: type[_Row], key: uuid.UUID) -> _Row | None:
    known = _known(tx, model)
    if key not in known:
        known[key] = await tx.session.get(model, key)
    return known[key]


async def prefetch(tx: UnitOfWork, events: list[Envelope]) -> None:
    """Read the accounts and won deals a batch's events will look up in one query per 500 keys,
    so each handler finds them in memory, or knows them absent, instead of one SELECT (and
    autoflush) per event."""
    await _load(tx, Account, Account.lead_id, {e.lead_id for e in events if e.lead_id is not None})
    deal_ids = {_uuid(e.data.get("deal_id")) for e in events if e.type == "deal.won"}
    await _load(tx, Deal, Deal.deal_id, {d for d in deal_ids if d is not None})


async def _load(
    tx: UnitOfWork, model: type[_Row], column: InstrumentedAttribute[uuid.UUID], keys: set[uuid.UUID]
) -> None:
    known = _known(tx, model)
    wanted = [key for key in keys if key not in known]
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await tx.session.scalars(select(model).where(column.in_(chunk)))
        found = {getattr(row, column.key): row for row in rows}
        known.update({key: found.get(key) for key in chunk})


def _uuid(value: object) -> uuid.UUID | None:
    """An id from an event's raw data; None for one the handler will refuse anyway."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def _account(tx: UnitOfWork, lead_id: uuid.UUID) -> Account:
    account = await _get_known(tx, Account, lead_id)
    if account is None:
        now = tx.now()
        account = Account(lead_id=lead_id, contact_name=None, created_at=now, updated_at=now)
        tx.session.add(account)
        _known(tx, Account)[lead_id] = account
    return account


async def open_deposit_invoice(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None, won: ev.DealWon) -> Deal:
    """A deal was won: issue its deposit invoice (``invoice.issued``), keep the deal's work
    authorization, and for a retainer a ``pending`` subscription that starts when the deposit
    clears. A deposit of nothing clears at once (``deposit.cleared``). The same deal won
    twice (a new event for it) opens nothing more."""
    if lead_id is None:
        raise Invalid(f"deal.won for deal {won.deal_id} has no lead_id: billing needs the client")
    existing = await _get_known(tx, Deal, won.deal_id)
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
    if won.tier is not None and account.tier is None:
        account.tier = won.tier

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
        due_in_days=ctx.settings.deposit_due_days,
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
    _known(tx, Deal)[deal.deal_id] = deal
    if invoice.status == "paid":
        # No deposit asked (share 0): the deposit is recorded, as a paid invoice of nothing,
        # and clears now, so the deal may start and the funnel moves on as for a paid one.
        await _clear_deposit(tx, ctx, deal, invoice)
    return deal


async def _clear_deposit(tx: UnitOfWork, ctx: Billing, deal: Deal, invoice: Invoice) -> None:
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
            await start_subscription(tx, ctx, subscription, deposit=invoice)


async def start_subscription(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, deposit: Invoice | None = None
) -> None:
    """The retainer runs from now (``subscription.started``) and its first period is billed
    at once, in advance, prorated to the 1st of next month, less the deposit paid."""
    now = tx.now()
    subscription.status = domain.transition(subscription.status, "activate")
    subscription.started_at = now
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
    ctx.metrics.mrr_movement(tx, "new", subscription.currency, subscription.monthly_fee)
    await bill_period(tx, ctx, subscription, start=now, deposit=deposit)


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> tuple[Deal, Invoice]:
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id} in billing (billing learns of a deal when it is won)")
    return deal, deal.deposit_invoice


# --------------------------------------------------------------------------- payments


async def record_payment(tx: UnitOfWork, ctx: Billing, data: PaymentIn) -> PaymentOut:
    """Record money received against an invoice (``payment.succeeded``). Partial payments add
    up; a surplus is credited to the client's balance. The payment that settles a deposit
    clears it (``deposit.cleared``) and, for a retainer, starts the subscription."""
    return await apply_money(
        tx,
        ctx,
        invoice_id=data.invoice_id,
        amount=data.amount,
        currency=data.currency,
        method=data.method,
        reference=data.reference,
        source="manual",
    )


async def apply_money(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    invoice_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    method: str,
    reference: str | None,
    source: str,
    external_id: str | None = None,
) -> PaymentOut:
    """Money reached an invoice, from any source (manual, webhook, retry, credit balance)."""
    # Locked so two payments at once cannot both read the same amount already paid. A payment
    # never reads the lines: they are not loaded (that was a query per payment).
    invoice = await tx.session.scalar(
        select(Invoice).where(Invoice.id == invoice_id).with_for_update().options(raiseload(Invoice.lines))
    )
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    if external_id is not None:
        known = await tx.session.scalar(select(Payment).where(Payment.external_id == external_id))
        if known is not None:
            raise Conflict(f"payment {external_id} was already recorded (payment {known.id})")
    application = domain.apply_payment(
        # Credit notes lower what the invoice asks, as if that part were paid.
        invoice_amount=invoice.amount - invoice.amount_credited,
        invoice_currency=invoice.currency,
        already_paid=invoice.amount_paid,
        status=invoice.status,
        amount=amount,
        currency=currency,
    )
    now = tx.now()
    late = domain.days_late(due_at=invoice.due_at, paid_at=now)
    payment = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        lead_id=invoice.lead_id,
        amount=amount,
        applied=application.applied,
        credited=application.credited,
        currency=currency,
        method=method,
        reference=reference,
        source=source,
        external_id=external_id,
        received_at=now,
        days_late=late,
    )
    tx.session.add(payment)
    invoice.amount_paid = application.amount_paid
    invoice.status = application.status
    if application.settles:
        invoice.paid_at = now
    balance = await _credit(tx, lead_id=invoice.lead_id, currency=currency, amount=application.credited)
    tx.emit(
        "payment.succeeded",
        ev.PaymentSucceeded(
            payment_id=payment.id,
            invoice_id=invoice.id,
            amount=amount,
            currency=currency,
            method=method,
            reference=reference,
            paid_at=now,
            days_late=late,
            invoice_paid=application.status == "paid",
            applied=application.applied,
            credited=application.credited,
        ),
        lead_id=invoice.lead_id,
    )
    if application.settles:
        await settled(tx, ctx, invoice)
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


async def settled(tx: UnitOfWork, ctx: Billing, invoice: Invoice) -> None:
    """An invoice is fully paid (or credited): its dunning ends, a deposit clears."""
    await close_dunning(tx, invoice, reason="paid")
    if invoice.kind == "deposit" and invoice.deal_id is not None:
        # Its deposit invoice is ``invoice``, in the session already: not selected again.
        deal = await tx.session.scalar(
            select(Deal)
            .where(Deal.deal_id == invoice.deal_id)
            .with_for_update()
            .options(lazyload(Deal.deposit_invoice))
        )
        if deal is not None:
            await _clear_deposit(tx, ctx, deal, invoice)


async def close_dunning(tx: UnitOfWork, invoice: Invoice, *, reason: str) -> None:
    """Stop chasing an invoice; a client who was in a dunning state is told it is clear."""
    case = await tx.session.get(DunningCase, invoice.id)
    if case is None or not case.open:
        return
    case.open = False
    case.next_retry_at = None
    case.updated_at = tx.now()
    if case.state is not None:
        tx.emit(
            "dunning.state_changed",
            ev.DunningStateChanged(
                invoice_id=invoice.id,
                subscription_id=case.subscription_id,
                from_state=case.state,
                to_state="clear",
                reason=reason,
            ),
            lead_id=invoice.lead_id,
        )
        case.state = "clear"
    if case.subscription_id is not None:
        await refresh_subscription_dunning(tx, case.subscription_id)


_SEVERITY = {None: 0, "clear": 0, "overdue": 1, "retrying": 2, "grace": 2, "warning": 3, "blocked": 4, "cancelled": 5}


async def refresh_subscription_dunning(tx: UnitOfWork, subscription_id: uuid.UUID) -> None:
    """A subscription shows the worst state of its unpaid invoices."""
    await tx.session.flush()
    states = await tx.session.scalars(
        select(DunningCase.state).where(DunningCase.subscription_id == subscription_id, DunningCase.open.is_(True))
    )
    worst = max(states, key=lambda s: _SEVERITY.get(s, 0), default=None)
    subscription = await tx.session.get(Subscription, subscription_id)
    if subscription is not None:
        subscription.dunning_state = worst if _SEVERITY.get(worst, 0) else None


def _balances(tx: UnitOfWork) -> dict[tuple[uuid.UUID, str], CreditBalance | None]:
    """The credit balance rows this transaction has read, by client and currency, and the ones
    known not to exist: most clients have none, and one payment looks for it up to three times."""
    return tx.memo.setdefault("billing.known.credit_balances", {})


async def _balance(tx: UnitOfWork, lead_id: uuid.UUID, currency: str) -> CreditBalance | None:
    known = _balances(tx)
    if (lead_id, currency) not in known:
        known[lead_id, currency] = await tx.session.get(CreditBalance, (lead_id, currency))
    return known[lead_id, currency]


async def _locked_balance(tx: UnitOfWork, lead_id: uuid.UUID, currency: str) -> CreditBalance:
    row = await store.locked_credit_balance(tx.session, lead_id=lead_id, currency=currency, now=tx.now())
    _balances(tx)[lead_id, currency] = row  # created now if it was not there
    return row


async def _credit(tx: UnitOfWork, *, lead_id: uuid.UUID, currency: str, amount: Decimal) -> Decimal:
    """Add ``amount`` to the client's credit in ``currency``; returns the balance."""
    if amount <= 0:
        row = await _balance(tx, lead_id, currency)
        return row.balance if row else Decimal("0.00")
    now = tx.now()
    row = await _locked_balance(tx, lead_id, currency)
    row.balance = row.balance + amount
    row.updated_at = now
    return row.balance


async def apply_credit_balance(tx: UnitOfWork, ctx: Billing, invoice: Invoice) -> None:
    """Spend the client's credit (same currency only) on a new invoice, as Stripe applies the
    customer balance to the next invoice."""
    if invoice.status != "open":
        return
    row = await _balance(tx, invoice.lead_id, invoice.currency)
    if row is None or row.balance <= 0:
        return
    row = await _locked_balance(tx, invoice.lead_id, invoice.currency)
    spend = min(row.balance, domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited))
    if spend <= 0:
        return
    row.balance -= spend
    row.updated_at = tx.now()
    await tx.session.flush()
    await apply_money(
        tx, ctx, invoice_id=invoice.id, amount=spend, currency=invoice.currency,
        method="credit_balance", reference=None, source="credit",
    )


async def credit_balances(tx: UnitOfWork, lead_id: uuid.UUID) -> list[CreditBalance]:
    rows = await tx.session.scalars(select(CreditBalance).where(CreditBalance.lead_id == lead_id))
    return list(rows)


# --------------------------------------------------------------------------- credit notes


async def issue_credit_note(
    tx: UnitOfWork, ctx: Billing, *, invoice_id: uuid.UUID, amount: Decimal, currency: str, reason: str, refund: bool
) -> CreditNote:
    """Correct an issued invoice without touching it (``credit_note.issued``): the credit
    first lowers what is still due; the paid part is refunded or kept as the client's credit."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    if invoice.status == "void":
        raise Conflict("the invoice is void: there is nothing to credit")
    if currency != invoice.currency:
        raise Invalid(f"credit note currency {currency} differs from the invoice's {invoice.currency}")
    split = domain.split_credit(
        amount=amount,
        invoice_amount=invoice.amount,
        paid=invoice.amount_paid,
        credited_before=invoice.amount_credited,
        refund=refund,
    )
    now = tx.now()
    sequence = await store.next_credit_note_sequence(tx.session, now.year)
    note = CreditNote(
        id=uuid.uuid4(),
        number=f"CN-{domain.invoice_number(now.year, sequence)}",
        invoice_id=invoice.id,
        lead_id=invoice.lead_id,
        currency=invoice.currency,
        amount=amount,
        reduces_due=split.reduces_due,
        refunded=split.refunded,
        credited=split.credited,
        reason=reason,
        issued_at=now,
    )
    tx.session.add(note)
    invoice.amount_credited = invoice.amount_credited + amount
    was_open = invoice.status == "open"
    if was_open and domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited) == 0:
        invoice.status = "paid"
        invoice.paid_at = now
    await _credit(tx, lead_id=invoice.lead_id, currency=invoice.currency, amount=split.credited)
    tx.emit(
        "credit_note.issued",
        ev.CreditNoteIssued(
            credit_note_id=note.id,
            number=note.number,
            invoice_id=invoice.id,
            amount=amount,
            currency=invoice.currency,
            reduces_due=split.reduces_due,
            refunded=split.refunded,
            credited=split.credited,
            reason=reason,
            issued_at=now,
        ),
        lead_id=invoice.lead_id,
    )
    if was_open and invoice.status == "paid":
        await close_dunning(tx, invoice, reason="credited")
    return note


async def credit_note_from(tx: UnitOfWork, ctx: Billing, invoice_id: uuid.UUID, body: CreditNoteIn) -> CreditNote:
    return await issue_credit_note(
        tx, ctx, invoice_id=invoice_id, amount=body.amount, currency=body.currency, reason=body.reason, refund=body.refund
    )


async def list_credit_notes(tx: UnitOfWork, *, lead_id: uuid.UUID | None, invoice_id: uuid.UUID | None) -> list[CreditNote]:
    query = select(CreditNote)
    if lead_id is not None:
        query = query.where(CreditNote.lead_id == lead_id)
    if invoice_id is not None:
        query = query.where(CreditNote.invoice_id == invoice_id)
    return list(await tx.session.scalars(query.order_by(CreditNote.number)))


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
    ctx: Billing,
    *,
    lead_id: uuid.UUID | None,
    reason: str,
    effective_at: datetime,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """The client left: end the named subscription, or all of theirs when none is named
    (``subscription.cancelled`` for each that had started, with its fee, so retention can
    count the churned MRR). Periods due before the end are billed first; the unused part of
    the period the end falls in is given back by credit note; hours over the included ones in
    that last period are billed on a final overage invoice."""
    if lead_id is None:
        return []
    now = tx.now()
    cancelled = await _subscriptions_in(tx, lead_id, ("pending", "active", "paused"), only=subscription_id)
    for subscription in cancelled:
        was = subscription.status
        if was != "pending":
            await bill_due_periods(tx, ctx, subscription, until=min(effective_at, now))
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
        if was == "active":
            ctx.metrics.mrr_movement(tx, "churn", subscription.currency, subscription.monthly_fee)
        await _close_last_period(tx, ctx, subscription, effective_at=effective_at)
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


async def _close_last_period(tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, effective_at: datetime) -> None:
    start, end = subscription.current_period_start, subscription.current_period_end
    if start is None or end is None:
        return
    billed = await tx.session.get(BilledPeriod, (subscription.id, start))
    if billed is not None and billed.invoice_id is not None and effective_at < end:
        full = domain.full_month((start, end), calendar_aligned=ctx.settings.calendar_months)
        unused = domain.prorate(billed.fee, period=full, used=(max(effective_at, start), end))
        invoice = await tx.session.get(Invoice, billed.invoice_id)
        if unused > 0 and invoice is not None and invoice.status != "void":
            unused = min(unused, invoice.amount - invoice.amount_credited)
            if unused > 0:
                await issue_credit_note(
                    tx, ctx, invoice_id=invoice.id, amount=unused, currency=invoice.currency,
                    reason=f"Unused retainer time after {effective_at:%d %b %Y} (prorated)", refund=False,
                )
    # The last period's hours: reported, and the overage billed now (no next invoice will).
    used, lines = await _usage_lines(tx, ctx, subscription, period=(start, end), billed=billed)
    if lines:
        await issue_invoice(
            tx,
            lead_id=subscription.lead_id,
            kind="overage",
            currency=subscription.currency,
            lines=lines,
            due_in_days=ctx.settings.invoice_due_days,
            subscription_id=subscription.id,
            period=(start, end),
            hours_used=used,
            included_hours=subscription.included_hours,
        )


async def apply_save_offer(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    lead_id: uuid.UUID | None,
    offer: ev.SaveOffer,
    subscription_id: uuid.UUID | None = None,
) -> list[Subscription]:
    """A client who wanted to leave took a save offer. A pause keeps the subscription at the
    offer's (low) fee, from its next period, until the offer's months run out
    (``subscription.paused``); a paused subscription is not churn and not in MRR. Discounts
    and downgrades change the price: not billed here yet."""
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
        await bill_due_periods(tx, ctx, subscription, until=now)
        subscription.status = domain.transition(subscription.status, "pause")
        subscription.paused_at = now
        subscription.paused_fee = fee
        subscription.paused_until = domain.add_months(now, offer.months) if offer.months else None
        subscription.updated_at = now
        ctx.metrics.mrr_movement(tx, "paused", subscription.currency, subscription.monthly_fee)
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


async def resume_subscription(tx: UnitOfWork, ctx: Billing, subscription_id: uuid.UUID) -> Subscription:
    """A paused subscription runs again at its full fee from its next period
    (``subscription.resumed``); it is back in MRR."""
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    await bill_due_periods(tx, ctx, subscription, until=tx.now())
    _resume(tx, ctx, subscription)
    return subscription


def _resume(tx: UnitOfWork, ctx: Billing, subscription: Subscription) -> None:
    subscription.status = domain.transition(subscription.status, "resume")
    subscription.paused_at = None
    subscription.paused_until = None
    subscription.paused_fee = None
    subscription.updated_at = tx.now()
    ctx.metrics.mrr_movement(tx, "resumed", subscription.currency, subscription.monthly_fee)
    tx.emit(
        "subscription.resumed", ev.SubscriptionResumed(subscription_id=subscription.id), lead_id=subscription.lead_id
    )


# --------------------------------------------------------------------------- retainer periods


async def bill_due_periods(tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, until: datetime) -> int:
    """Bill every period of the subscription that has begun by ``until`` and is not billed yet
    (a clock jump of three months bills three). Returns how many were billed."""
    count = 0
    while (
        subscription.status in ("active", "paused")
        and subscription.current_period_end is not None
        and subscription.current_period_end <= until
    ):
        await bill_period(tx, ctx, subscription, start=subscription.current_period_end)
        count += 1
    return count


async def bill_period(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, start: datetime, deposit: Invoice | None = None
) -> Invoice | None:
    """Invoice the period beginning at ``start``, in advance, exactly once (its
    ``billed_periods`` row is the guard): the fee (the low fee while paused, prorated for a
    partial first period, the new price once a price change is effective) and the overage of
    the period that just closed."""
    settings = ctx.settings
    assert subscription.started_at is not None
    end = domain.period_after(start, anchor=subscription.started_at, calendar_aligned=settings.calendar_months)
    previous = (subscription.current_period_start, subscription.current_period_end)
    subscription.current_period_start, subscription.current_period_end = start, end
    subscription.updated_at = tx.now()
    if await tx.session.get(BilledPeriod, (subscription.id, start)) is not None:
        return None  # billed already (by another instance, or before a restart)

    if subscription.status == "paused" and domain.pause_ends(paused_until=subscription.paused_until, period_start=start):
        _resume(tx, ctx, subscription)
    await _apply_scheduled_prices(tx, ctx, subscription, period_start=start)

    fee = domain.billed_fee(
        status=subscription.status, monthly_fee=subscription.monthly_fee, paused_fee=subscription.paused_fee
    )
    full = domain.full_month((start, end), calendar_aligned=settings.calendar_months)
    amount = fee if (start, end) == full else domain.prorate(fee, period=full, used=(start, end))
    label = "Retainer (paused, low fee)" if subscription.status == "paused" else "Retainer"
    text = f"{label}, {domain.describe_period(start, end)}"
    if (start, end) != full:
        days = Decimal((end - start).total_seconds() / 86400).quantize(Decimal("0.1"))
        text += f" (prorated: {days} of {(full[1] - full[0]).days} days of {quantize(fee)})"
    lines = [ev.InvoiceLine(description=text, quantity=Decimal(1), amount=amount)]

    used: Decimal | None = None
    if previous[0] is not None and previous[1] is not None and previous[0] != start:
        closed = await tx.session.get(BilledPeriod, (subscription.id, previous[0]))
        used, overage_lines = await _usage_lines(tx, ctx, subscription, period=(previous[0], previous[1]), billed=closed)
        lines += overage_lines

    if deposit is not None and deposit.amount_paid > 0:
        subtotal = sum((line.amount for line in lines), Decimal(0))
        deduct = min(deposit.amount_paid, subtotal)
        lines.append(
            ev.InvoiceLine(description=f"Less deposit paid (invoice {deposit.number})", quantity=Decimal(1), amount=-deduct)
        )
        # A deposit larger than a short first period: the rest is the client's credit.
        await _credit(tx, lead_id=subscription.lead_id, currency=subscription.currency, amount=deposit.amount_paid - deduct)

    invoice = await issue_invoice(
        tx,
        lead_id=subscription.lead_id,
        kind="subscription",
        currency=subscription.currency,
        lines=lines,
        due_in_days=settings.invoice_due_days,
        deal_id=subscription.deal_id,
        subscription_id=subscription.id,
        period=(start, end),
        hours_used=used,
        included_hours=subscription.included_hours,
    )
    await tx.session.flush()  # the invoice row first: the period points at it
    tx.session.add(
        BilledPeriod(
            subscription_id=subscription.id,
            period_start=start,
            period_end=end,
            invoice_id=invoice.id,
            fee=fee,
            status=subscription.status,
        )
    )
    await tx.session.flush()
    await apply_credit_balance(tx, ctx, invoice)
    return invoice


async def _usage_lines(
    tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, period: tuple[datetime, datetime], billed: BilledPeriod | None
) -> tuple[Decimal, list[ev.InvoiceLine]]:
    """Report a closed period's hours (``hours.usage_reported``, once) and the overage line."""
    if billed is not None and billed.usage_reported_at is not None:
        return Decimal(0), []
    # Added in Python: SQLite keeps exact decimals as text, and SUM would make them floats.
    rows = await tx.session.scalars(
        select(TimeEntry.hours).where(TimeEntry.subscription_id == subscription.id, TimeEntry.period_start == period[0])
    )
    used = sum(rows, Decimal(0))
    over, cost = domain.overage(used=used, included=subscription.included_hours, rate=subscription.hourly_rate)
    if billed is not None:
        billed.usage_reported_at = tx.now()
    tx.emit(
        "hours.usage_reported",
        ev.HoursUsageReported(
            subscription_id=subscription.id,
            period_start=period[0],
            period_end=period[1],
            included_hours=subscription.included_hours,
            used_hours=used,
            overage_hours=over,
            overage_amount=cost,
            currency=subscription.currency,
            utilisation=domain.utilisation(used=used, included=subscription.included_hours),
        ),
        lead_id=subscription.lead_id,
    )
    if cost <= 0:
        return used, []
    rate = quantize(subscription.hourly_rate or Decimal(0))
    return used, [
        ev.InvoiceLine(
            description=(
                f"Overage {domain.describe_period(*period)}: {format(over.normalize(), 'f')} h over "
                f"{format((subscription.included_hours or Decimal(0)).normalize(), 'f')} h included at {rate}/h"
            ),
            quantity=over,
            amount=cost,
        )
    ]


async def _apply_scheduled_prices(tx: UnitOfWork, ctx: Billing, subscription: Subscription, *, period_start: datetime) -> None:
    due = await tx.session.scalars(
        select(ScheduledPrice)
        .where(
            ScheduledPrice.subscription_id == subscription.id,
            ScheduledPrice.applied_at.is_(None),
            ScheduledPrice.effective_at <= period_start,
        )
        .order_by(ScheduledPrice.effective_at, ScheduledPrice.id)
    )
    for scheduled in due:
        old = subscription.monthly_fee
        subscription.monthly_fee = scheduled.new_fee
        scheduled.applied_at = tx.now()
        movement = domain.mrr_movement(old=old, new=scheduled.new_fee)
        if movement and domain.in_mrr(subscription.status):
            ctx.metrics.mrr_movement(tx, movement, subscription.currency, scheduled.new_fee - old)


async def subscriptions_due(tx: UnitOfWork, now: datetime) -> list[uuid.UUID]:
    rows = await tx.session.scalars(
        select(Subscription.id).where(
            Subscription.status.in_(("active", "paused")), Subscription.current_period_end <= now
        )
    )
    return list(rows)


CYCLE_JOB = "billing.cycle"


async def bill_due_subscriptions(uow: UnitOfWorkFactory, ctx: Billing, now: datetime) -> Pass[uuid.UUID, int]:
    """Scheduled: bill every retainer period that has begun (scheduled prices take effect with
    it), 50 subscriptions a transaction. One that fails is kept aside with its reason and
    backoff (``shared.jobs``, job ``billing.cycle``) and the others are billed: it used to be a
    transaction per subscription, and a batch is split only when it fails."""
    async with uow() as tx:
        due = await subscriptions_due(tx, now)

    async def lock(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, Subscription]:
        ctx.metrics.watch(tx)
        rows = await tx.session.scalars(
            select(Subscription).where(Subscription.id.in_(ids)).order_by(Subscription.id).with_for_update()
        )
        return {s.id: s for s in rows}

    async def bill(tx: UnitOfWork, subscription: Subscription) -> int:
        return await bill_due_periods(tx, ctx, subscription, until=tx.now())

    return await ctx.jobs(CYCLE_JOB).run(uow, due, bill, now=now, load=lock, chunk=50)


async def bill_subscription(tx: UnitOfWork, ctx: Billing, subscription_id: uuid.UUID) -> int:
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        return 0
    return await bill_due_periods(tx, ctx, subscription, until=tx.now())


# --------------------------------------------------------------------------- hours


async def record_time(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    subscription_id: uuid.UUID,
    hours: Decimal,
    description: str | None,
    change_order_id: uuid.UUID | None,
) -> tuple[TimeEntry, Subscription, Decimal]:
    """Hours worked on a retainer count against its current period's included hours; what
    goes over is billed at the hourly rate on the next invoice. Returns the entry, the
    subscription and the hours used in the period so far."""
    subscription = await tx.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    )
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}")
    if subscription.status != "active":
        raise Conflict(f"the retainer is {subscription.status}: time can only be recorded on an active retainer")
    if hours <= 0:
        raise Invalid("hours must be greater than zero")
    if hours > 24:
        raise Invalid("one time entry is at most 24 hours")
    now = tx.now()
    # Bring the periods up to date first, so the hours land in the period they were worked in.
    await bill_due_periods(tx, ctx, subscription, until=now)
    if change_order_id is not None:
        order = await tx.session.get(ChangeOrder, change_order_id)
        if order is None or order.lead_id != subscription.lead_id:
            raise NotFound(f"no change order {change_order_id} for this client")
        order.work_done_at = order.work_done_at or now
    assert subscription.current_period_start is not None
    entry = TimeEntry(
        id=uuid.uuid4(),
        subscription_id=subscription.id,
        lead_id=subscription.lead_id,
        period_start=subscription.current_period_start,
        hours=hours,
        description=description,
        change_order_id=change_order_id,
        worked_at=now,
        recorded_at=now,
    )
    tx.session.add(entry)
    await tx.session.flush()
    rows = await tx.session.scalars(
        select(TimeEntry.hours).where(
            TimeEntry.subscription_id == subscription.id, TimeEntry.period_start == subscription.current_period_start
        )
    )
    return entry, subscription, sum(rows, Decimal(0))


# --------------------------------------------------------------------------- price changes


async def schedule_price_change(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    percent: Decimal | None,
    new_price: Decimal | None,
    currency: str | None,
    effective_at: datetime,
    subscription_ids: list[uuid.UUID] | None,
    grandfathered: list[uuid.UUID],
) -> tuple[store.PriceChange, list[ScheduledPrice], list[datetime]]:
    """Announce a price change (``price.change_scheduled`` per subscription, with the notice
    dates): invoices for periods starting on or after ``effective_at`` use the new price.
    Grandfathered subscriptions keep theirs. A date in the past is refused."""
    now = tx.now()
    notices = domain.notice_dates(effective_at=effective_at, now=now, days_before=ctx.settings.price_notice_days)
    if new_price is not None and currency is None:
        raise Invalid("a new_price needs its currency (prices are never converted)")
    query = select(Subscription).where(Subscription.status.in_(("pending", "active", "paused")))
    if subscription_ids:
        query = query.where(Subscription.id.in_(subscription_ids))
    elif currency is not None:
        query = query.where(Subscription.currency == currency)
    targets = list(await tx.session.scalars(query.order_by(Subscription.created_at, Subscription.id).with_for_update()))
    if subscription_ids:
        missing = set(subscription_ids) - {s.id for s in targets}
        if missing:
            raise NotFound(f"no running subscription {', '.join(sorted(map(str, missing)))}")
    held = set(grandfathered)
    change = store.PriceChange(
        id=uuid.uuid4(), percent=percent, new_price=new_price, currency=currency,
        effective_at=effective_at, created_at=now,
    )
    tx.session.add(change)
    await tx.session.flush()
    scheduled: list[ScheduledPrice] = []
    for subscription in targets:
        if subscription.id in held:
            continue
        if currency is not None and subscription.currency != currency:
            raise Invalid(f"subscription {subscription.id} is billed in {subscription.currency}, not {currency}")
        fee = domain.new_price(old=subscription.monthly_fee, percent_change=percent, price=new_price)
        row = ScheduledPrice(
            price_change_id=change.id, subscription_id=subscription.id, old_fee=subscription.monthly_fee,
            new_fee=fee, effective_at=effective_at,
        )
        tx.session.add(row)
        scheduled.append(row)
        tx.emit(
            "price.change_scheduled",
            ev.PriceChangeScheduled(
                subscription_id=subscription.id,
                old_price=quantize(subscription.monthly_fee),
                new_price=fee,
                percent=percent,
                currency=subscription.currency,
                effective_at=effective_at,
                notice_dates=notices,
            ),
            lead_id=subscription.lead_id,
        )
    if not scheduled:
        raise Invalid("the price change applies to no subscription (all grandfathered or none running)")
    return change, scheduled, notices


# --------------------------------------------------------------------------- accounts


async def set_tier(tx: UnitOfWork, lead_id: uuid.UUID | None, tier: str) -> None:
    if lead_id is None:
        return
    account = await _account(tx, lead_id)
    account.tier = tier
    account.updated_at = tx.now()


async def set_takeover(tx: UnitOfWork, lead_id: uuid.UUID | None, *, active: bool) -> None:
    """A human handles the client: dunning reminders wait until they are done."""
    if lead_id is None:
        return
    account = await _account(tx, lead_id)
    account.takeover_since = (account.takeover_since or tx.now()) if active else None
    account.updated_at = tx.now()


# --------------------------------------------------------------------------- privacy


async def erase_contact(tx: UnitOfWork, lead_id: uuid.UUID | None) -> None:
    """Forget the person: the billing contact's name, who signed, free-text payment
    references, time-entry notes and change-request texts (which may name people).
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
    await tx.session.execute(update(TimeEntry).where(TimeEntry.lead_id == lead_id).values(description=None))
    await tx.session.execute(update(ChangeOrder).where(ChangeOrder.lead_id == lead_id).values(description=None))
    await forget_person(tx, lead_id)

"""Deposits: a won deal's deposit invoice, the work authorization it gives once paid, and the
retainer that starts when it clears."""

from __future__ import annotations

import uuid
from decimal import Decimal

from services.billing import domain, invoices, record, subscriptions
from services.billing.context import Billing
from services.billing.store import Deal, Invoice, Subscription
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.money import quantize
from shared.uow import UnitOfWork


async def open_deposit_invoice(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None, won: ev.DealWon) -> Deal:
    """A deal was won: issue its deposit invoice (``invoice.issued``), keep the deal's work
    authorization, and for a retainer a ``pending`` subscription that starts when the deposit
    clears. A deposit of nothing clears at once (``deposit.cleared``). The same deal won
    twice (a new event for it) opens nothing more."""
    if lead_id is None:
        raise Invalid(f"deal.won for deal {won.deal_id} has no lead_id: billing needs the client")
    existing = await record.get_known(tx, Deal, won.deal_id)
    if existing is not None:
        return existing
    amount = domain.deposit_amount(
        kind=won.kind, total=won.total, monthly_fee=won.monthly_fee, deposit_share=won.deposit_share
    )
    now = tx.now()
    account = await record.account(tx, lead_id)
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

    invoice = await invoices.issue_invoice(
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
        channel=won.channel,
        deposit_amount=amount,
        deposit_invoice=invoice,
        subscription_id=subscription.id if subscription else None,
        created_at=now,
    )
    tx.session.add(deal)
    record.remember_deal(tx, deal)
    if invoice.status == "paid":
        # No deposit asked (share 0): the deposit is recorded, as a paid invoice of nothing,
        # and clears now, so the deal may start and the funnel moves on as for a paid one.
        await clear_deposit(tx, ctx, deal=deal, invoice=invoice)
    return deal


async def clear_deposit(tx: UnitOfWork, ctx: Billing, *, deal: Deal, invoice: Invoice) -> None:
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
            await subscriptions.start_subscription(tx, ctx, subscription, deposit=invoice)


async def get_deal(tx: UnitOfWork, deal_id: uuid.UUID) -> tuple[Deal, Invoice]:
    """A won deal and its deposit invoice: whether work on it may start."""
    deal = await tx.session.get(Deal, deal_id)
    if deal is None:
        raise NotFound(f"no deal {deal_id} in billing (billing learns of a deal when it is won)")
    return deal, deal.deposit_invoice

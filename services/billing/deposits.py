"""Deposits: a won deal's deposit invoice, the work authorization it gives once paid, and the
retainer that starts when it clears."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.billing import domain, invoices, record, subscriptions
from services.billing.context import Billing
from services.billing.store import Account, Deal, Invoice, Subscription
from shared import events as ev
from shared.errors import Invalid, NotFound
from shared.ids import time_ordered_id
from shared.money import quantize
from shared.uow import UnitOfWork


async def open_deposit_invoice(tx: UnitOfWork, ctx: Billing, *, lead_id: uuid.UUID | None, won: ev.DealWon) -> None:
    """A deal was won: issue its deposit invoice (``invoice.issued``), keep the deal's work
    authorization, and for a retainer a ``pending`` subscription that starts when the deposit
    clears. A deposit of nothing clears at once (``deposit.cleared``). The same deal won
    twice (a new event for it) opens nothing more."""
    if lead_id is None:
        raise Invalid(f"deal.won for deal {won.deal_id} has no lead_id: billing needs the client")
    if won.deal_id in record.won_here(tx) or await record.get_known(tx, Deal, won.deal_id) is not None:
        return
    amount = domain.deposit_amount(
        kind=won.kind, total=won.total, monthly_fee=won.monthly_fee, deposit_share=won.deposit_share
    )
    now = tx.now()
    # An erased client keeps no name here, even if one still travels in an event.
    signed_by = await _sign_account(tx, lead_id, won=won, now=now)
    lines = [
        ev.InvoiceLine(
            description=domain.deposit_line(kind=won.kind, title=won.title, deposit_share=won.deposit_share),
            quantity=Decimal(1),
            amount=amount,
        )
    ]
    if quantize(amount) <= 0:
        # No deposit asked (share 0): the deposit is recorded, as a paid invoice of nothing,
        # and clears now, so the deal may start and the funnel moves on as for a paid one.
        # Rare: written as objects, which clearing and the retainer's start then change.
        await _open_cleared(tx, ctx, lead_id=lead_id, won=won, amount=amount, signed_by=signed_by, lines=lines, now=now)
        return
    # Every other deal is written as rows: nothing in this transaction changes them again.
    subscription_id: uuid.UUID | None = None
    if won.kind == "retainer":
        subscription = _subscription_row(lead_id, won, now)
        subscription_id = subscription["id"]
        await record.insert_later(tx, Subscription, [subscription])
    invoice = await invoices.issue_invoice_rows(tx, **_deposit_terms(ctx, lead_id, won, lines, subscription_id))
    deal = _deal_row(lead_id, won, amount=amount, signed_by=signed_by, now=now)
    await record.won_later(
        tx, {**deal, "deposit_invoice_id": invoice["id"], "subscription_id": subscription_id, "cleared_at": None}
    )


async def _sign_account(tx: UnitOfWork, lead_id: uuid.UUID, *, won: ev.DealWon, now: datetime) -> str | None:
    """Who signed, as the client's billing contact (created with the deal when billing had no
    account for them); None for an erased client."""
    account = await record.get_known(tx, Account, lead_id)
    if account is None:
        await record.insert_account_later(
            tx,
            {
                "lead_id": lead_id,
                "contact_name": won.signed_by,
                "created_at": now,
                "updated_at": now,
                "erased_at": None,
                "tier": won.tier,
                "takeover_since": None,
                "account_id": None,
            },
        )
        return won.signed_by
    signed_by = None if account.erased_at else won.signed_by
    if account.erased_at is None:
        account.contact_name = won.signed_by
        account.updated_at = now
    if won.tier is not None and account.tier is None:
        account.tier = won.tier
    return signed_by


def _subscription_row(lead_id: uuid.UUID, won: ev.DealWon, now: datetime) -> dict[str, Any]:
    assert won.monthly_fee is not None  # deposit_amount refused a retainer without it
    return {
        "id": time_ordered_id(),
        "lead_id": lead_id,
        "deal_id": won.deal_id,
        "status": "pending",
        "currency": won.currency,
        "monthly_fee": quantize(won.monthly_fee),
        "included_hours": won.included_hours,
        "hourly_rate": won.hourly_rate,
        "created_at": now,
        "updated_at": now,
    }


def _deal_row(
    lead_id: uuid.UUID, won: ev.DealWon, *, amount: Decimal, signed_by: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "deal_id": won.deal_id,
        "lead_id": lead_id,
        "kind": won.kind,
        "title": won.title,
        "currency": won.currency,
        "total": won.total,
        "signed_by": signed_by,
        "signed_at": won.signed_at,
        "deposit_share": won.deposit_share,
        "channel": won.channel,
        "deposit_amount": amount,
        "created_at": now,
    }


def _deposit_terms(
    ctx: Billing,
    lead_id: uuid.UUID,
    won: ev.DealWon,
    lines: list[ev.InvoiceLine],
    subscription_id: uuid.UUID | None,
) -> invoices.InvoiceTerms:
    return invoices.InvoiceTerms(
        lead_id=lead_id,
        kind="deposit",
        currency=won.currency,
        lines=lines,
        due_in_days=ctx.settings.deposit_due_days,
        deal_id=won.deal_id,
        subscription_id=subscription_id,
    )


async def _open_cleared(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    lead_id: uuid.UUID,
    won: ev.DealWon,
    amount: Decimal,
    signed_by: str | None,
    lines: list[ev.InvoiceLine],
    now: datetime,
) -> None:
    """A deal whose deposit is nothing: its rows as objects, cleared at once."""
    subscription: Subscription | None = None
    if won.kind == "retainer":
        subscription = Subscription(**_subscription_row(lead_id, won, now))
        tx.session.add(subscription)
    invoice = await invoices.issue_invoice(
        tx, **_deposit_terms(ctx, lead_id, won, lines, subscription.id if subscription else None)
    )
    deal = Deal(
        **_deal_row(lead_id, won, amount=amount, signed_by=signed_by, now=now),
        deposit_invoice=invoice,
        subscription_id=subscription.id if subscription else None,
    )
    tx.session.add(deal)
    record.remember_deal(tx, deal)
    await clear_deposit(tx, ctx, deal=deal, invoice=invoice)


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

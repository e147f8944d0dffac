"""Dunning: card failures (from the provider's webhook or a retry), the retry schedule, the
grace period of an expired card and the overdue ladder (warning, blocked, cancelled).

*When* a case moves, and when a client is blocked, is decided by the rules in
``domain/dunning.py``, on the ladder of the client's tier (billing keeps the tier retention
last announced on the account row; none yet: ``good``'s ladder); this module keeps the cases
and acts on their moves.

Every unpaid invoice past due, and every invoice a card failed on, has a ``DunningCase``.
The billing cycle job walks the open cases: due retries are asked of the card gateway, and
each case's state is recomputed from "now" (``domain.next_dunning_state``); a change is
published as ``dunning.state_changed``. While a human has taken the client over, states and
reminders wait (payment retries go on: they are not messages to the client).

One invoice never stops the others' dunning (``shared.jobs``, job ``billing.dunning``): one
that fails is kept in ``job_failures`` with its reason and tried again with backoff.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from services.billing import domain, payments, subscriptions
from services.billing.context import Billing
from services.billing.gateway import ChargeRequest, ProviderEvent
from services.billing.store import Account, DunningCase, Invoice, Subscription, WebhookEvent
from shared import events as ev
from shared.errors import NotFound
from shared.jobs import Pass
from shared.money import quantize
from shared.uow import UnitOfWork, UnitOfWorkFactory

JOB = "billing.dunning"


async def _case(tx: UnitOfWork, invoice: Invoice) -> DunningCase:
    case = await tx.session.get(DunningCase, invoice.id)
    if case is None:
        now = tx.now()
        case = DunningCase(
            invoice_id=invoice.id,
            lead_id=invoice.lead_id,
            subscription_id=invoice.subscription_id,
            state=None,
            open=True,
            failures=0,
            retries_done=0,
            hard_declined=False,
            opened_at=now,
            updated_at=now,
        )
        tx.session.add(case)
        await tx.session.flush()
    return case


async def record_failure(
    tx: UnitOfWork,
    ctx: Billing,
    *,
    invoice_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    method: str,
    decline_code: str | None,
) -> DunningCase:
    """A card payment failed (``payment.failed``). A soft decline is retried on the schedule;
    a hard decline is not retried; an expired card starts a grace period with service kept."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    domain.failure_check(status=invoice.status, invoice_currency=invoice.currency, currency=currency, amount=amount)
    now = tx.now()
    account = await tx.session.get(Account, invoice.lead_id)
    tier = account.tier if account else None
    case = await _case(tx, invoice)
    case.open = True
    case.failures += 1
    case.first_failed_at = case.first_failed_at or now
    case.last_decline_code = decline_code
    case.updated_at = now
    ladder = ctx.settings.dunning
    kind = domain.classify_decline(
        decline_code, hard_codes=ladder.hard_decline_codes, grace_codes=ladder.grace_decline_codes
    )
    if kind == "hard":
        case.hard_declined = True
    elif kind == "grace" and case.grace_until is None:
        case.grace_until = ladder.grace_until(declined_at=now, tier=tier)
    case.next_retry_at = domain.retry_after_decline(
        kind=kind,
        hard_declined=case.hard_declined,
        first_failed_at=case.first_failed_at,
        retries_done=case.retries_done,
        ladder=ladder,
        tier=tier,
    )
    tx.emit(
        "payment.failed",
        ev.PaymentFailed(
            invoice_id=invoice.id,
            amount=amount,
            currency=currency,
            method=method,
            decline_code=decline_code,
            hard_decline=kind == "hard",
            attempt=case.failures,
            next_retry_at=case.next_retry_at,
        ),
        lead_id=invoice.lead_id,
    )
    await advance(tx, ctx, case, invoice, account=account)
    return case


async def advance(
    tx: UnitOfWork, ctx: Billing, case: DunningCase, invoice: Invoice, *, account: Account | None
) -> str | None:
    """Recompute the case's state from now; publish a change (``dunning.state_changed``) and the
    first time the invoice is late, ``invoice.overdue``. Cancelled ends the subscription."""
    now = tx.now()
    if not case.open or invoice.status != "open":
        return case.state
    new = domain.next_dunning_state(
        current=case.state,
        taken_over=account is not None and account.takeover_since is not None,
        now=now,
        due_at=invoice.due_at,
        grace_until=case.grace_until,
        retrying=case.next_retry_at is not None,
        tier=account.tier if account else None,
        ladder=ctx.settings.dunning,
        failed=case.failures > 0,
    )
    if new is None:
        return case.state
    late = domain.days_overdue(due_at=invoice.due_at, now=now)
    if late >= 1 and case.overdue_notified_at is None:
        case.overdue_notified_at = now
        tx.emit(
            "invoice.overdue",
            ev.InvoiceOverdue(
                invoice_id=invoice.id,
                amount_due=quantize(domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited)),
                currency=invoice.currency,
                due_at=invoice.due_at,
                days_overdue=late,
            ),
            lead_id=invoice.lead_id,
        )
    previous, case.state = case.state, new
    case.updated_at = now
    tx.emit(
        "dunning.state_changed",
        ev.DunningStateChanged(
            invoice_id=invoice.id,
            subscription_id=case.subscription_id,
            from_state=previous,
            to_state=new,
            reason=domain.dunning_reason(
                new,
                decline_code=case.last_decline_code,
                grace_until=case.grace_until,
                retries_done=case.retries_done,
                next_retry_at=case.next_retry_at,
                days_late=late,
                hard_declined=case.hard_declined,
            ),
        ),
        lead_id=invoice.lead_id,
    )
    if case.subscription_id is not None:
        await refresh_subscription_dunning(tx, case.subscription_id)
        if new == "cancelled":
            await subscriptions.cancel_subscriptions(
                tx,
                ctx,
                lead_id=invoice.lead_id,
                reason="non_payment",
                effective_at=now,
                subscription_id=case.subscription_id,
            )
    return new


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


async def refresh_subscription_dunning(tx: UnitOfWork, subscription_id: uuid.UUID) -> None:
    """A subscription shows the worst state of its unpaid invoices."""
    await tx.session.flush()
    states = await tx.session.scalars(
        select(DunningCase.state).where(DunningCase.subscription_id == subscription_id, DunningCase.open.is_(True))
    )
    worst = domain.worst_state(states)
    subscription = await tx.session.get(Subscription, subscription_id)
    if subscription is not None:
        subscription.dunning_state = worst


async def run(uow: UnitOfWorkFactory, ctx: Billing, now: datetime) -> Pass[uuid.UUID, None]:
    """One dunning pass: a case for each invoice newly past due, due cards retried, states moved.

    Each invoice in a transaction of its own, as before: a retry charges a card, which must not
    run twice because a neighbour failed a shared transaction; the cases open at a time are few.
    One that fails is kept aside with backoff and the pass goes on."""
    async with uow() as tx:
        late = await tx.session.scalars(
            select(Invoice.id)
            .outerjoin(DunningCase, DunningCase.invoice_id == Invoice.id)
            .where(Invoice.status == "open", Invoice.due_at < now, DunningCase.invoice_id.is_(None))
        )
        ids = [*late, *await tx.session.scalars(select(DunningCase.invoice_id).where(DunningCase.open.is_(True)))]

    async def one(tx: UnitOfWork, invoice_id: uuid.UUID) -> None:
        await step(tx, ctx, invoice_id)

    return await ctx.jobs(JOB).run(uow, ids, one, now=now, together=False)


async def step(tx: UnitOfWork, ctx: Billing, invoice_id: uuid.UUID) -> None:
    """One invoice's dunning now: its case opened once it is past due, a due card retried, its
    state moved."""
    invoice = await tx.session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        return
    case = await tx.session.get(DunningCase, invoice_id)
    if case is None:
        if invoice.status != "open" or invoice.due_at >= tx.now():
            return
        case = await _case(tx, invoice)
    if not case.open:
        return
    if invoice.status != "open":
        await close_dunning(tx, invoice, reason=invoice.status)
        return
    account = await tx.session.get(Account, invoice.lead_id)
    if domain.retry_due(next_retry_at=case.next_retry_at, hard_declined=case.hard_declined, now=tx.now()):
        await _retry(tx, ctx, case, invoice, tier=account.tier if account else None)
        if invoice.status != "open":
            return
    await advance(tx, ctx, case, invoice, account=account)


async def _retry(tx: UnitOfWork, ctx: Billing, case: DunningCase, invoice: Invoice, *, tier: str | None) -> None:
    """Ask the gateway to charge again; the schedule (the client's tier's) moves on whatever
    the answer."""
    due = domain.amount_open(invoice.amount, invoice.amount_paid, invoice.amount_credited)
    case.retries_done += 1
    case.next_retry_at = domain.next_retry_at(
        first_failed_at=case.first_failed_at or tx.now(),
        retries_done=case.retries_done,
        ladder=ctx.settings.dunning,
        tier=tier,
    )
    result = await ctx.gateway.charge(
        ChargeRequest(
            invoice_id=invoice.id,
            lead_id=invoice.lead_id,
            amount=due,
            currency=invoice.currency,
            attempt=case.failures + 1,
        )
    )
    if result is None:
        return  # the provider reports the outcome by webhook
    if result.succeeded:
        await payments.apply_money(
            tx,
            ctx,
            invoice_id=invoice.id,
            amount=due,
            currency=invoice.currency,
            method="card",
            reference=result.reference,
            source="retry",
            external_id=result.reference,
        )
    else:
        await record_failure(
            tx,
            ctx,
            invoice_id=invoice.id,
            amount=due,
            currency=invoice.currency,
            method="card",
            decline_code=result.decline_code,
        )


# --------------------------------------------------------------------------- webhook


async def receive_webhook(tx: UnitOfWork, ctx: Billing, hook: ProviderEvent) -> dict[str, str]:
    """Apply one verified provider event exactly once (its ``id`` is stored with its effects)."""
    if await tx.session.get(WebhookEvent, hook.event_id) is not None:
        tx.after_commit(lambda: ctx.metrics.webhooks.labels("duplicate").inc())
        return {"status": "duplicate", "id": hook.event_id}
    tx.session.add(WebhookEvent(event_id=hook.event_id, type=hook.type, received_at=tx.now()))
    if hook.type == "payment.succeeded":
        receipt = await payments.apply_money(
            tx,
            ctx,
            invoice_id=hook.invoice_id,
            amount=hook.amount,
            currency=hook.currency,
            method=hook.method,
            reference=hook.reference,
            source="webhook",
            external_id=hook.reference or hook.event_id,
        )
        outcome = {
            "status": "applied",
            "id": hook.event_id,
            "payment_id": str(receipt.payment_id),
            "invoice_status": receipt.invoice_status,
        }
    elif hook.type == "payment.failed":
        case = await record_failure(
            tx,
            ctx,
            invoice_id=hook.invoice_id,
            amount=hook.amount,
            currency=hook.currency,
            method=hook.method,
            decline_code=hook.decline_code,
        )
        outcome = {"status": "applied", "id": hook.event_id, "dunning_state": str(case.state)}
    else:
        outcome = {"status": "ignored", "id": hook.event_id}
    tx.after_commit(lambda: ctx.metrics.webhooks.labels(outcome["status"]).inc())
    return outcome

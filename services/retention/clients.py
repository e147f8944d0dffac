"""The client record from other services' events: one applier per thing that happened to a
person (captured, qualified, won, invoiced, paid...). Each keeps the counts and the timeline
the rules read, then re-assesses the client (``assessment.changed``)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import select

from services.retention import domain, loyalty, record
from services.retention.assessment import changed
from services.retention.context import Context
from services.retention.store import Cancellation, ChannelSpend, Referral
from shared import events as ev
from shared.privacy import forget_person
from shared.uow import UnitOfWork

# --------------------------------------------------------------------------- the funnel


async def record_capture(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    channel: str,
    captured_at: datetime,
    duplicate: bool,
    email: str | None = None,
    referred_by: uuid.UUID | None = None,
    owner_id: uuid.UUID | None = None,
) -> None:
    """A lead was captured: keep the acquisition channel (for per-channel economics), a hash
    of the address (to refuse referring an existing client), who referred them and its sales
    owner. A repeat touch of a known person (``duplicate``) says nothing new but who owns the
    lead now; about a person retention never saw, it creates nothing."""
    if duplicate:
        known = await record.locked_client(tx, lead_id)
        if known is not None and known.owner_id != owner_id:
            known.owner_id = owner_id
            known.updated_at = tx.now()
        return
    client = await record.client(tx, lead_id)
    if client.captured_at is not None:
        return
    client.channel = channel
    client.captured_at = captured_at
    client.email_hash = record.email_hash(email)
    client.owner_id = owner_id
    if referred_by is not None and referred_by != lead_id:
        client.referred_by = referred_by
        referral = await loyalty.referral_of(tx, referred_by, client)
        if referral is not None and referral.status == "made":
            referral.referred_lead_id = lead_id
            referral.status = "captured"
        if client.became_client_at is not None:  # the deposit's topic was read first
            await loyalty.credit_referrer(tx, ctx, client)
    await changed(tx, ctx, client)


async def record_assignment(
    tx: UnitOfWork, lead_id: uuid.UUID, *, owner_id: uuid.UUID | None, role: Literal["lead", "account"]
) -> None:
    """The lead (``role`` lead: its sales owner) or the client (``role`` account: the account
    owner a won deal handed it to) has a new owner, or none (back in the pool). Ownership moves
    no factor: the client is not re-assessed and nothing goes on its timeline."""
    client = await record.client(tx, lead_id)
    if role == "account":
        client.account_owner_id = owner_id
    else:
        client.owner_id = owner_id
    client.updated_at = tx.now()


async def record_qualified(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> None:
    """BANT qualification: a funnel stage for conversion rates."""
    client = await record.client(tx, lead_id)
    client.qualified_at = client.qualified_at or record.when(tx)
    await changed(tx, ctx, client)


async def record_proposed(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID) -> None:
    """An estimate was sent: a funnel stage."""
    client = await record.client(tx, lead_id)
    client.proposed_at = client.proposed_at or record.when(tx)
    await changed(tx, ctx, client)


async def record_deal_won(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    value: Decimal,
    currency: str,
    hourly_rate: Decimal | None = None,
    red_flags: int = 0,
    channel: str | None = None,
) -> None:
    """A signed deal: counted, its value kept per currency, its rate kept to price leaked scope."""
    client = await record.client(tx, lead_id)
    client.deals_won += 1
    client.won_at = client.won_at or record.when(tx)
    client.proposed_at = client.proposed_at or client.won_at
    client.hourly_rate = hourly_rate or client.hourly_rate
    client.red_flags = max(client.red_flags or 0, red_flags)
    client.channel = client.channel or channel
    await record.add_money(tx, lead_id, measure="won", amount=value, currency=currency)
    record.timeline(tx, client, "deal.won", value=value, currency=currency)
    await changed(tx, ctx, client)


async def become_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, cleared_at: datetime) -> None:
    """The first deposit cleared: the person is a client, in the default tier, with a health
    score from now on; whoever referred them is credited. Later deposits change nothing here;
    their money arrives as ``payment.succeeded`` (counting it here too would count it twice)."""
    client = await record.client(tx, lead_id)
    if client.became_client_at is not None:
        return
    client.became_client_at = cleared_at
    record.timeline(tx, client, "deposit.cleared", at=cleared_at)
    if client.tier is None:
        client.tier = domain.DEFAULT_TIER
        client.tier_reasons = ["first deposit cleared"]
        client.tier_changed_at = tx.now()
        tx.emit(
            "client.tier_changed",
            ev.ClientTierChanged(from_tier=None, to_tier=domain.DEFAULT_TIER, reasons=["first deposit cleared"]),
            lead_id=lead_id,
        )
    if client.referred_by is not None:
        await loyalty.credit_referrer(tx, ctx, client)
    await changed(tx, ctx, client)


async def record_spend(
    tx: UnitOfWork, *, event_id: uuid.UUID, channel: str, start: date, end: date, amount: Decimal, currency: str
) -> None:
    """Acquisition spend of a channel over a period (CAC)."""
    if await tx.session.get(ChannelSpend, event_id) is None:
        tx.session.add(
            ChannelSpend(
                event_id=event_id,
                channel=channel,
                period_start=start,
                period_end=end,
                amount=amount,
                currency=currency,
            )
        )


# --------------------------------------------------------------------------- money


async def record_invoice(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    amount: Decimal,
    currency: str,
    kind: str = "deposit",
    hours_used: Decimal | None = None,
    included_hours: Decimal | None = None,
) -> None:
    """An invoice was issued to the client; a subscription invoice may report hours used."""
    client = await record.client(tx, lead_id)
    client.invoices_issued += 1
    await record.add_money(tx, lead_id, measure="invoiced", amount=amount, currency=currency)
    if hours_used is not None:
        client.hours_used = hours_used
        client.hours_included = included_hours if included_hours is not None else client.hours_included
    record.timeline(tx, client, "invoice.issued", kind=kind, amount=amount, currency=currency, hours_used=hours_used)
    await changed(tx, ctx, client)


async def record_payment(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    amount: Decimal,
    currency: str,
    days_late: int,
    invoice_id: uuid.UUID | None = None,
    invoice_paid: bool = False,
    paid_at: datetime | None = None,
) -> None:
    """Money received: revenue, and whether it came on time (evidence of punctuality). A fully
    paid invoice earns loyalty points once its refund window has passed."""
    client = await record.client(tx, lead_id)
    if days_late > 0:
        client.payments_late += 1
        client.days_late_total += days_late
    else:
        client.payments_on_time += 1
    await record.add_money(tx, lead_id, measure="revenue", amount=amount, currency=currency)
    record.timeline(
        tx,
        client,
        "payment.succeeded",
        amount=amount,
        currency=currency,
        late=days_late > 0,
        days_late=days_late,
        invoice_id=invoice_id,
    )
    if invoice_id is not None and invoice_paid:
        client.overdue_invoices = [i for i in (client.overdue_invoices or []) if i != str(invoice_id)]
        await loyalty.queue_points(
            tx, ctx, lead_id=lead_id, invoice_id=invoice_id, currency=currency, paid_at=paid_at or record.when(tx)
        )
    await changed(tx, ctx, client)


async def record_payment_failure(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, hard: bool = False) -> None:
    """A payment attempt failed (each retry that fails counts: it is friction every time)."""
    client = await record.client(tx, lead_id)
    client.payments_failed += 1
    record.timeline(tx, client, "payment.failed", hard_decline=hard)
    await changed(tx, ctx, client)


async def record_overdue(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID, days: int) -> None:
    """An invoice is overdue: a churn-risk signal until it is paid or voided."""
    client = await record.client(tx, lead_id)
    if str(invoice_id) not in (client.overdue_invoices or []):
        client.overdue_invoices = [*(client.overdue_invoices or []), str(invoice_id)]
    record.timeline(tx, client, "invoice.overdue", invoice_id=invoice_id, days_overdue=days)
    await changed(tx, ctx, client)


async def record_voided(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID) -> None:
    """A voided invoice is no longer overdue and earns no points."""
    client = await record.client(tx, lead_id)
    client.overdue_invoices = [i for i in (client.overdue_invoices or []) if i != str(invoice_id)]
    await loyalty.void_points(tx, invoice_id)
    record.timeline(tx, client, "invoice.voided", invoice_id=invoice_id)
    await changed(tx, ctx, client)


async def record_credit_note(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, invoice_id: uuid.UUID, refunded: Decimal, currency: str
) -> None:
    """A refund inside the refund window cancels the invoice's loyalty points; refunded money
    is no longer revenue."""
    client = await record.client(tx, lead_id)
    if refunded > 0:
        await loyalty.void_points(tx, invoice_id)
        await record.add_money(tx, lead_id, measure="revenue", amount=-refunded, currency=currency)
    record.timeline(tx, client, "credit_note.issued", invoice_id=invoice_id, refunded=refunded, currency=currency)
    await changed(tx, ctx, client)


async def record_dunning(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, to_state: str) -> None:
    """Billing's dunning ladder moved (warning, blocked...): on the timeline, behind the failures factor."""
    client = await record.client(tx, lead_id)
    record.timeline(tx, client, "dunning.state_changed", to_state=to_state)
    await changed(tx, ctx, client)


async def record_hours(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, used: Decimal, included: Decimal | None, overage: Decimal
) -> None:
    """A retainer period closed: hours used against those included (the under-use rule). A
    client under the underuse share two months running gets a nudge and their account owner a
    task (``client.hours_underused``, once per run of such months)."""
    client = await record.client(tx, lead_id)
    client.hours_used = used
    client.hours_included = included if included is not None else client.hours_included
    record.timeline(tx, client, "hours.usage_reported", used=used, included=included, overage=overage)
    share = ctx.settings.risk.underused_share
    months = domain.underused_months(client.underused_months or 0, used=used, included=included, share=share)
    client.underused_months = months
    if months == domain.NUDGE_AFTER_MONTHS and included:
        tx.emit(
            "client.hours_underused",
            ev.ClientHoursUnderused(months=months, used_hours=used, included_hours=included, share=share),
            lead_id=lead_id,
        )
    await changed(tx, ctx, client)


# --------------------------------------------------------------------------- behaviour


async def record_change_request(
    tx: UnitOfWork,
    ctx: Context,
    lead_id: uuid.UUID,
    *,
    in_scope: bool,
    amount: Decimal = Decimal(0),
    hours: Decimal | None = None,
    currency: str | None = None,
) -> None:
    """The client asked for a change. Out of scope is accepted only as a paid change order:
    an out-of-scope ask with no price slipped through unbilled (``domain.leaked_revenue``)."""
    client = await record.client(tx, lead_id)
    client.change_requests += 1
    if not in_scope:
        client.out_of_scope_requests += 1
    leaked = domain.leaked_revenue(in_scope=in_scope, amount=amount, hours=hours, hourly_rate=client.hourly_rate)
    record.timeline(
        tx,
        client,
        "deal.change_requested",
        in_scope=in_scope,
        amount=amount,
        hours=hours,
        leaked=leaked,
        currency=currency,
    )
    await changed(tx, ctx, client)


async def record_feedback(
    tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, score: int | None, complaint: bool, replaces: bool = False
) -> None:
    """A survey answer; complaints are welcome, and counted. A changed answer replaces the
    score without counting another answer."""
    client = await record.client(tx, lead_id)
    if not replaces:
        client.feedback_count += 1
    if score is not None:
        client.last_feedback_score = score
    if complaint:
        client.complaints += 1
    record.timeline(tx, client, "feedback.received", score=score, complaint=complaint)
    await changed(tx, ctx, client)


async def record_engagement(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, event_type: str) -> None:
    """Opens, clicks and unsubscribes: the engagement factor and the engagement-drop rule."""
    client = await record.client(tx, lead_id)
    client.engagement_seen = True
    if event_type == "lead.unsubscribed":
        client.unsubscribed_at = client.unsubscribed_at or record.when(tx)
    record.timeline(tx, client, event_type)
    await changed(tx, ctx, client)


async def record_takeover(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, started: bool) -> None:
    """A human took over (or released) the client: shown on the record, counted."""
    client = await record.client(tx, lead_id)
    if started and not client.takeover_active:
        client.takeovers += 1
    client.takeover_active = started
    record.timeline(tx, client, "takeover.started" if started else "takeover.ended")
    await changed(tx, ctx, client)


async def erase_client(tx: UnitOfWork, ctx: Context, lead_id: uuid.UUID, *, requested_at: datetime) -> None:
    """Erasure: counts and amounts stay (anonymous); free text the client wrote and the hash
    of their address go."""
    client = await record.client(tx, lead_id)
    if client.erased_at is None:
        client.erased_at = requested_at
    client.email_hash = None
    for cancellation in await tx.session.scalars(select(Cancellation).where(Cancellation.lead_id == lead_id)):
        cancellation.comment = None
    for referral in await tx.session.scalars(select(Referral).where(Referral.referred_lead_id == lead_id)):
        referral.email_hash = None
    await forget_person(tx, lead_id)
    await changed(tx, ctx, client)

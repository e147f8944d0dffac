"""Loyalty points and referrals: points a paid invoice earns once its refund window has passed,
the referrals clients make and the bonus a converted one earns (domain/loyalty.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, tuple_

from services.retention import domain, record
from services.retention.context import Context
from services.retention.store import Client, LoyaltyAward, Referral
from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.ids import time_ordered_id
from shared.uow import UnitOfWork, UnitOfWorkFactory

LOYALTY_JOB = "retention.loyalty"
PAGE = 200
WINDOW = 5000  # due awards read at a time (``award_due_points``)


# --------------------------------------------------------------------------- points


async def queue_points(
    tx: UnitOfWork, ctx: Context, *, lead_id: uuid.UUID, invoice_id: uuid.UUID, currency: str, paid_at: datetime
) -> None:
    """A fully paid invoice earns points once its refund window has passed: kept pending until
    then (``award_due_points``), once per invoice, for every payment of it in ``currency``."""
    if await record.award(tx, invoice_id) is not None:
        return
    paid = [
        Decimal(d["amount"])
        for d in await record.payment_details(tx, lead_id)
        if d.get("invoice_id") == str(invoice_id) and d.get("currency") == currency
    ]
    record.add_award(
        tx,
        invoice_id=invoice_id,
        lead_id=lead_id,
        amount=sum(paid, Decimal(0)),
        currency=currency,
        due_at=paid_at + ctx.settings.loyalty.refund_window,
    )


async def void_points(tx: UnitOfWork, invoice_id: uuid.UUID) -> None:
    """A voided or refunded invoice earns no points (if they are still pending)."""
    award = await record.award(tx, invoice_id)
    if award is not None and award.status == "pending":
        award.status = "voided"


async def award_due_points(uow: UnitOfWorkFactory, ctx: Context, now: datetime) -> int:
    """Points for paid invoices whose refund window has passed (``loyalty.points_awarded``), a
    page a transaction; one that fails is kept aside (job ``retention.loyalty``). Returns how
    many awards were settled."""
    due = (
        select(LoyaltyAward.due_at, LoyaltyAward.invoice_id)
        .where(LoyaltyAward.status == "pending", LoyaltyAward.due_at <= now)
        .order_by(LoyaltyAward.due_at, LoyaltyAward.invoice_id)
        .limit(WINDOW)
    )

    async def load(tx: UnitOfWork, ids: list[uuid.UUID]) -> dict[uuid.UUID, LoyaltyAward]:
        query = (
            select(LoyaltyAward)
            .where(LoyaltyAward.invoice_id.in_(ids), LoyaltyAward.status == "pending")
            .with_for_update(skip_locked=True)
        )
        return {a.invoice_id: a for a in await tx.session.scalars(query)}

    async def settle(tx: UnitOfWork, award: LoyaltyAward) -> None:
        client = await record.locked_client(tx, award.lead_id)
        award.points = domain.loyalty_points(award.amount, ctx.settings.loyalty.points_per_unit)
        award.status = "awarded"
        award.awarded_at = now
        if client is None or award.points == 0:
            return
        client.loyalty_points += award.points
        # Counted once committed (RetentionMetrics.count_emitted): a chunk that fails is tried
        # again alone, and its points are counted once.
        tx.emit(
            "loyalty.points_awarded",
            ev.LoyaltyPointsAwarded(
                points=award.points, reason="invoice paid", balance=client.loyalty_points, invoice_id=award.invoice_id
            ),
            lead_id=client.lead_id,
        )

    settled = 0
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        # A window of due awards at a time, after the last one seen (those kept aside stay
        # pending): with 100,000 due, every id and the job's bookkeeping of each was held at
        # once, 33 MB above the service's resting size.
        async with uow() as tx:
            query = due if after is None else due.where(tuple_(LoyaltyAward.due_at, LoyaltyAward.invoice_id) > after)
            window = (await tx.session.execute(query)).all()
        if not window:
            return settled
        done = await ctx.jobs(LOYALTY_JOB).run(uow, [i for _, i in window], settle, now=now, load=load, chunk=PAGE)
        settled += len(done.done)
        if len(window) < WINDOW:
            return settled
        after = (window[-1][0], window[-1][1])


# --------------------------------------------------------------------------- referrals


async def referral_of(tx: UnitOfWork, referrer_id: uuid.UUID, client: Client) -> Referral | None:
    """The referral that brought ``client``: by the lead it captured, else by the address."""
    found = await tx.session.scalar(select(Referral).where(Referral.referred_lead_id == client.lead_id))
    if found is not None or client.email_hash is None:
        return found
    return await tx.session.scalar(
        select(Referral)
        .where(Referral.referrer_id == referrer_id, Referral.email_hash == client.email_hash)
        .order_by(Referral.created_at)
        .limit(1)
    )


async def credit_referrer(tx: UnitOfWork, ctx: Context, client: Client) -> None:
    """The referred lead became a client: the referral converts and the referrer earns points."""
    assert client.referred_by is not None
    referrer = await record.locked_client(tx, client.referred_by)
    if referrer is None:
        return
    referral = await referral_of(tx, referrer.lead_id, client)
    if referral is None:  # referred outside retention (typed in at leads): still a referral
        referral = Referral(
            id=time_ordered_id(),
            referrer_id=referrer.lead_id,
            email_hash=client.email_hash,
            status="made",
            created_at=client.captured_at or tx.now(),
        )
        tx.session.add(referral)
    if referral.status == "converted":
        return
    referral.status = "converted"
    referral.referred_lead_id = client.lead_id
    referral.converted_at = client.became_client_at
    referrer.referrals_converted += 1
    bonus = ctx.settings.loyalty.referral_bonus_points
    if bonus:
        referrer.loyalty_points += bonus
        tx.emit(
            "loyalty.points_awarded",
            ev.LoyaltyPointsAwarded(points=bonus, reason="referral converted", balance=referrer.loyalty_points),
            lead_id=referrer.lead_id,
        )


async def make_referral(
    tx: UnitOfWork,
    *,
    referrer_id: uuid.UUID,
    name: str,
    email: str,
    company: str | None,
    note: str | None,
) -> Referral:
    """A client refers someone (``referral.made``; leads creates the lead on channel
    ``referral`` and moves the referrer to ``advocacy``). Refused for someone who already is a
    client, for the referrer themselves, and twice for the same person."""
    referrer = await tx.session.get(Client, referrer_id, with_for_update=True)
    if referrer is None:
        raise NotFound(f"no client {referrer_id}")
    hashed = record.email_hash(email)
    if hashed is not None and hashed == referrer.email_hash:
        raise Conflict("a client cannot refer themselves")
    existing = await tx.session.scalar(
        select(Client.lead_id).where(Client.email_hash == hashed, Client.became_client_at.is_not(None)).limit(1)
    )
    if existing is not None:
        raise Conflict(f"{email} is already a client: a referral brings someone new")
    again = await tx.session.scalar(
        select(Referral.id).where(Referral.referrer_id == referrer_id, Referral.email_hash == hashed).limit(1)
    )
    if again is not None:
        raise Conflict(f"referral {again} already names this person")
    referral = Referral(
        id=time_ordered_id(), referrer_id=referrer_id, email_hash=hashed, status="made", created_at=tx.now()
    )
    tx.session.add(referral)
    referrer.referrals_made += 1
    # Counted once committed (RetentionMetrics.count_emitted).
    tx.emit(
        "referral.made",
        ev.ReferralMade(referral_id=referral.id, name=name, email=email, company=company, note=note),
        lead_id=referrer_id,
        # The referred person's data is theirs, not the referrer's: sealed with a key of the
        # referral, which leads gives to the lead it makes of them (erased with that lead).
        seal_for=referral.id,
    )
    return referral


# --------------------------------------------------------------------------- replay of retention's own events


async def replay_referral(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.ReferralMade) -> None:
    """Rebuild: a referral the client made (its event is the record of it)."""
    if await tx.session.get(Referral, p.referral_id) is not None:
        return
    referrer = await record.client(tx, lead_id)
    hashed = record.email_hash(p.email)
    # leads may already have captured the referred person (their events can come first)
    referred = (
        await tx.session.scalar(
            select(Client).where(Client.referred_by == lead_id, Client.email_hash == hashed).limit(1)
        )
        if hashed
        else None
    )
    tx.session.add(
        Referral(
            id=p.referral_id,
            referrer_id=lead_id,
            email_hash=hashed,
            status="captured" if referred else "made",
            referred_lead_id=referred.lead_id if referred else None,
            created_at=record.when(tx),
        )
    )
    referrer.referrals_made += 1


async def replay_points(tx: UnitOfWork, lead_id: uuid.UUID, p: ev.LoyaltyPointsAwarded) -> None:
    """Rebuild: points the client was awarded, and its balance."""
    client = await record.client(tx, lead_id)
    if p.invoice_id is not None:
        award = await record.award(tx, p.invoice_id)
        if award is not None and award.status == "awarded":
            return
        if award is not None:
            award.status, award.points, award.awarded_at = "awarded", p.points, record.when(tx)
    client.loyalty_points = p.balance

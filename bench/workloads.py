"""Each service's input events, as valid envelopes with payloads its handlers really act on."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared import events as ev
from shared.events import make_event
from shared.ids import time_ordered_id


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes
    value: bytes


def _msg(event_type: str, payload: ev.Payload, *, producer: str, lead_id: uuid.UUID) -> Message:
    event = make_event(event_type, payload, producer=producer, occurred_at=_now(), lead_id=lead_id)
    return Message(ev.topic_of(event_type), event.key, event.model_dump_json().encode())


def lead_captured(lead_id: uuid.UUID, n: int, rng: random.Random) -> Message:
    return _msg(
        "lead.captured",
        ev.LeadCaptured(
            name=f"Bench Person {n}",
            email=f"p{n}-{lead_id.hex[:8]}@bench{n % 997}.example.org",
            company=f"Bench {n % 997}",
            country="DE",
            language="en",
            timezone="UTC",
            channel=rng.choice(["website", "referral", "ads", "events"]),
            budget=Decimal(rng.randrange(2000, 20000)),
            currency="EUR",
            has_brief=True,
            needs=["seo"],
            consent_marketing=True,
            fit_score=rng.randrange(20, 95),
        ),
        producer="leads",
        lead_id=lead_id,
    )


def deal_won(lead_id: uuid.UUID, n: int, rng: random.Random) -> Message:
    retainer = n % 2 == 0
    fee = Decimal(rng.randrange(800, 4000))
    return _msg(
        "deal.won",
        ev.DealWon(
            deal_id=time_ordered_id(),
            title=f"Engagement {n}",
            kind="retainer" if retainer else "project",
            currency="EUR",
            lines=[] if retainer else [ev.ScopeLine(description="Build", hours=Decimal(20), amount=fee * 3)],
            total=fee if retainer else fee * 3,
            monthly_fee=fee if retainer else None,
            included_hours=Decimal(10) if retainer else None,
            signed_by=f"Bench Person {n}",
            signed_at=_now(),
            deposit_share=Decimal("0.30"),
            fit_score=60,
            channel="website",
        ),
        producer="leads",
        lead_id=lead_id,
    )


def invoice_issued(lead_id: uuid.UUID, invoice_id: uuid.UUID, amount: Decimal) -> Message:
    now = _now()
    return _msg(
        "invoice.issued",
        ev.InvoiceIssued(
            invoice_id=invoice_id,
            number=f"B-{invoice_id.hex[:8]}",
            kind="deposit",
            deal_id=time_ordered_id(),
            amount=amount,
            currency="EUR",
            issued_at=now,
            due_at=now + timedelta(days=14),
        ),
        producer="billing",
        lead_id=lead_id,
    )


def payment_succeeded(lead_id: uuid.UUID, invoice_id: uuid.UUID, amount: Decimal) -> Message:
    return _msg(
        "payment.succeeded",
        ev.PaymentSucceeded(
            payment_id=time_ordered_id(),
            invoice_id=invoice_id,
            amount=amount,
            currency="EUR",
            method="bank_transfer",
            paid_at=_now(),
            invoice_paid=True,
        ),
        producer="billing",
        lead_id=lead_id,
    )


def for_nurture(count: int, rng: random.Random) -> list[Message]:
    """New leads to enroll in the welcome sequence (each schedules and sends an e-mail)."""
    return [lead_captured(time_ordered_id(), n, rng) for n in range(count)]


def for_billing(count: int, rng: random.Random) -> list[Message]:
    """Signed estimates: a deposit invoice each, and a subscription for every retainer."""
    return [deal_won(time_ordered_id(), n, rng) for n in range(count)]


def for_retention(count: int, rng: random.Random) -> list[Message]:
    """A client's story in four events: captured, won, invoiced, paid."""
    out: list[Message] = []
    n = 0
    while len(out) < count:
        lead_id, invoice_id, amount = time_ordered_id(), time_ordered_id(), Decimal(rng.randrange(500, 5000))
        story = [
            lead_captured(lead_id, n, rng),
            deal_won(lead_id, n, rng),
            invoice_issued(lead_id, invoice_id, amount),
            payment_succeeded(lead_id, invoice_id, amount),
        ]
        out.extend(story[: count - len(out)])
        n += 1
    return out


def for_leads(lead_ids: list[uuid.UUID], count: int, rng: random.Random) -> list[Message]:
    """What happens to known leads: opens, clicks, a referral, a cleared deposit."""
    out: list[Message] = []
    n = 0
    while len(out) < count:
        lead_id = lead_ids[n % len(lead_ids)]
        kind = n % 4
        if kind == 0:
            out.append(
                _msg("email.opened", ev.EmailOpened(message_id=time_ordered_id()), producer="nurture", lead_id=lead_id)
            )
        elif kind == 1:
            out.append(
                _msg(
                    "email.clicked",
                    ev.EmailClicked(message_id=time_ordered_id(), url="https://bench.example.org/offer"),
                    producer="nurture",
                    lead_id=lead_id,
                )
            )
        elif kind == 2:
            out.append(
                _msg(
                    "referral.made",
                    ev.ReferralMade(
                        referral_id=time_ordered_id(),
                        name=f"Referred {n}",
                        email=f"r{n}-{uuid.uuid4().hex[:8]}@ref{n % 991}.example.net",
                    ),
                    producer="retention",
                    lead_id=lead_id,
                )
            )
        else:
            out.append(
                _msg(
                    "deposit.cleared",
                    ev.DepositCleared(
                        deal_id=time_ordered_id(),
                        invoice_id=time_ordered_id(),
                        amount=Decimal(900),
                        currency="EUR",
                        cleared_at=_now(),
                    ),
                    producer="billing",
                    lead_id=lead_id,
                )
            )
        n += 1
    return out

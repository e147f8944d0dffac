"""Stripe's own webhook events (``POST /payments/stripe``), verified with Stripe's library and
turned into the payment use cases billing already has: nothing here is a new rule.

============================================  =============================================
Stripe event                                  what billing does
============================================  =============================================
``payment_intent.succeeded``                  a payment of ``amount_received`` (``payment.succeeded``)
``payment_intent.payment_failed``             a declined charge: dunning (``payment.failed``)
``charge.refunded``                           a refunding credit note (``credit_note.issued``)
``charge.dispute.created``                    on an open invoice a failed payment with decline
                                              code ``dispute``; on a paid one logged and counted
``customer.source.expiring`` and the rest     acknowledged (``ignored``) and counted
============================================  =============================================

The invoice is named by ``metadata.invoice_id`` (the agency sets it when it creates the
intent); a charge or dispute without it is traced through its ``payment_intent`` to the
payment that intent recorded. Amounts arrive in the currency's minor units (cents; yen as
they are): converted with ``shared.money.minor_units``.

A Stripe event id is applied once (the ``webhook_events`` table the project webhook uses): the
same event again answers ``duplicate`` and changes nothing. See ``docs/design.md``, "HTTP
surface" and "Reliability rules".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import select

from services.billing import dunning, payments
from services.billing.context import Billing
from services.billing.gateway import ProviderEvent
from services.billing.store import Invoice, Payment, WebhookEvent
from shared.errors import DomainError, Invalid
from shared.money import minor_units
from shared.signing import BadSignature
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Stripe-Signature"

StripeEvent = Mapping[str, Any]


class StripeNotConfigured(DomainError):
    """No ``BILLING_STRIPE_WEBHOOK_SECRET``: Stripe's events cannot be verified, so none is taken
    (404: the endpoint is off; Stripe retries any non-2xx, so the events arrive once the secret
    is set). Not a 5xx: nothing is broken, the feature is not configured."""

    status = 404


def verify(*, body: bytes, header: str | None, secret: str, now: datetime, tolerance_s: int) -> StripeEvent:
    """The event Stripe signed (``Stripe-Signature``), checked by Stripe's own library; its
    timestamp must lie within ``tolerance_s`` of the business clock (an old one replayed is
    refused). ``BadSignature`` (400) otherwise."""
    try:
        # tolerance=0 turns off the library's own age check, which reads the wall clock: billing
        # has one business clock (a simulated one in tests), so the age is checked below with it,
        # in both directions, as the project webhook checks it.
        event = stripe.Webhook.construct_event(body, header, secret, tolerance=0)
    except stripe.SignatureVerificationError as exc:
        raise BadSignature(f"bad Stripe signature: {exc.user_message or exc}") from None
    except ValueError:
        raise Invalid("the signed body is not a Stripe event (JSON object)") from None
    assert header is not None  # construct_event refuses a missing header
    timestamp = _signed_at(header)
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise BadSignature(f"timestamp outside the {tolerance_s} s tolerance window (replayed or clock skew)")
    data: dict[str, Any] = event.to_dict()
    return data


def _signed_at(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            return int(value)
    raise BadSignature("Stripe-Signature header has no t=<unix seconds>")


def amount_of(minor: int, currency: str) -> Decimal:
    """Stripe's integer amount in minor units as money: 1999 EUR cents is 19.99, 500 JPY is 500."""
    return Decimal(int(minor)).scaleb(-minor_units(currency))


def _invoice_in(metadata: object) -> uuid.UUID | None:
    if not isinstance(metadata, Mapping):
        return None
    try:
        return uuid.UUID(str(metadata["invoice_id"]))
    except (KeyError, ValueError):
        return None


async def _invoice_of(tx: UnitOfWork, obj: Mapping[str, Any]) -> uuid.UUID | None:
    """The invoice a charge or dispute is about: its own metadata, or the payment its intent
    recorded (a succeeded intent's payment keeps the intent id as its external id)."""
    named = _invoice_in(obj.get("metadata"))
    if named is not None:
        return named
    intent = obj.get("payment_intent")
    if isinstance(intent, Mapping):
        return _invoice_in(intent.get("metadata")) or await _invoice_of(tx, {"payment_intent": intent.get("id")})
    if not isinstance(intent, str):
        return None
    return await tx.session.scalar(select(Payment.invoice_id).where(Payment.external_id == intent))


def _decline_code(intent: Mapping[str, Any]) -> str | None:
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code")
    return str(code) if code else None


async def receive(tx: UnitOfWork, ctx: Billing, event: StripeEvent) -> dict[str, str]:
    """Apply one verified Stripe event exactly once, through billing's existing use cases."""
    event_id, kind = str(event["id"]), str(event["type"])
    obj: Mapping[str, Any] = event.get("data", {}).get("object", {})
    if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        invoice_id = _invoice_in(obj.get("metadata"))
        if invoice_id is None:
            return await _ignored(tx, ctx, event_id, kind, "the payment intent has no metadata.invoice_id")
        succeeded = kind == "payment_intent.succeeded"
        currency = str(obj["currency"]).upper()
        hook = ProviderEvent(
            event_id=event_id,
            type="payment.succeeded" if succeeded else "payment.failed",
            invoice_id=invoice_id,
            amount=amount_of(obj["amount_received"] if succeeded else obj["amount"], currency),
            currency=currency,
            method="card",
            reference=str(obj["id"]),
            decline_code=None if succeeded else _decline_code(obj),
        )
        return await dunning.receive_webhook(tx, ctx, hook)
    if await tx.session.get(WebhookEvent, event_id) is not None:
        tx.after_commit(lambda: ctx.metrics.webhooks.labels("duplicate").inc())
        return {"status": "duplicate", "id": event_id}
    if kind == "charge.refunded":
        return await _refunded(tx, ctx, event_id, kind, event, obj)
    if kind == "charge.dispute.created":
        return await _disputed(tx, ctx, event_id, kind, obj)
    if kind == "customer.source.expiring":
        reason = "billing has no card-expiring notice; the decline of an expired card starts the grace period"
        return await _ignored(tx, ctx, event_id, kind, reason)
    return await _ignored(tx, ctx, event_id, kind, f"billing does not act on {kind}")


async def _refunded(
    tx: UnitOfWork, ctx: Billing, event_id: str, kind: str, event: StripeEvent, obj: Mapping[str, Any]
) -> dict[str, str]:
    """A refund: a credit note for what this event refunded, its paid part refunded.

    ``amount_refunded`` is the charge's running total; Stripe's ``previous_attributes`` holds
    the total before this refund, so a second partial refund credits only its own part."""
    invoice_id = await _invoice_of(tx, obj)
    if invoice_id is None:
        return await _ignored(tx, ctx, event_id, kind, "the charge names no invoice (metadata.invoice_id)")
    currency = str(obj["currency"]).upper()
    before = (event.get("data", {}).get("previous_attributes") or {}).get("amount_refunded") or 0
    minor = int(obj["amount_refunded"]) - int(before)
    if minor <= 0:
        return await _ignored(tx, ctx, event_id, kind, "nothing new was refunded")
    tx.session.add(WebhookEvent(event_id=event_id, type=kind, received_at=tx.now()))
    note = await payments.issue_credit_note(
        tx,
        invoice_id=invoice_id,
        amount=amount_of(minor, currency),
        currency=currency,
        reason=f"Stripe refund of charge {obj['id']}",
        refund=True,
    )
    tx.after_commit(lambda: ctx.metrics.webhooks.labels("applied").inc())
    return {"status": "applied", "id": event_id, "credit_note_id": str(note.id), "number": note.number}


async def _disputed(
    tx: UnitOfWork, ctx: Billing, event_id: str, kind: str, dispute: Mapping[str, Any]
) -> dict[str, str]:
    """A client disputed a charge. Billing has no dispute case of its own: on an invoice still
    open the dispute is a failed payment (decline code ``dispute``, so dunning chases it); on
    a paid one it is logged and counted for a person to answer in Stripe."""
    invoice_id = await _invoice_of(tx, dispute)
    if invoice_id is None:
        return await _ignored(tx, ctx, event_id, kind, "the dispute's charge names no invoice")
    tx.session.add(WebhookEvent(event_id=event_id, type=kind, received_at=tx.now()))
    invoice = await tx.session.get(Invoice, invoice_id)
    reason = str(dispute.get("reason") or "unknown")
    log.warning("Stripe dispute %s (%s) on invoice %s", dispute.get("id"), reason, invoice_id)
    if invoice is not None and invoice.status == "open":
        currency = str(dispute["currency"]).upper()
        case = await dunning.record_failure(
            tx,
            ctx,
            invoice_id=invoice_id,
            amount=amount_of(dispute["amount"], currency),
            currency=currency,
            method="card",
            decline_code="dispute",
        )
        tx.after_commit(lambda: ctx.metrics.webhooks.labels("applied").inc())
        return {"status": "applied", "id": event_id, "dunning_state": str(case.state)}
    tx.after_commit(lambda: ctx.metrics.webhooks.labels("dispute").inc())
    return {"status": "recorded", "id": event_id, "invoice_id": str(invoice_id), "reason": reason}


async def _ignored(tx: UnitOfWork, ctx: Billing, event_id: str, kind: str, reason: str) -> dict[str, str]:
    """Acknowledged (200, so Stripe stops sending it) and counted; its id is kept, so the same
    event again answers ``duplicate``."""
    if await tx.session.get(WebhookEvent, event_id) is not None:
        tx.after_commit(lambda: ctx.metrics.webhooks.labels("duplicate").inc())
        return {"status": "duplicate", "id": event_id}
    tx.session.add(WebhookEvent(event_id=event_id, type=kind[:60], received_at=tx.now()))
    tx.after_commit(lambda: ctx.metrics.webhooks.labels("ignored").inc())
    return {"status": "ignored", "id": event_id, "reason": reason}

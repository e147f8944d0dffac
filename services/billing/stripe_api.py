"""Billing's route for Stripe's own webhook events: verify, call one use case, answer."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.billing import stripe_events
from services.billing.context import Billing
from shared.access.rules import public
from shared.service import ServiceRuntime
from shared.signing import BadSignature


def router(runtime: ServiceRuntime, ctx: Billing) -> APIRouter:
    settings, metrics = ctx.settings, ctx.metrics
    api = APIRouter()

    @api.post("/payments/stripe", dependencies=[public()], tags=["payments"])
    async def stripe_webhook(request: Request) -> dict[str, str]:
        """Stripe's own webhook events, signed by Stripe (`Stripe-Signature`, with the endpoint's
        secret `BILLING_STRIPE_WEBHOOK_SECRET`; 404 while none is set). `payment_intent.succeeded`
        pays the invoice in `metadata.invoice_id`, `payment_intent.payment_failed` goes to
        dunning, `charge.refunded` issues a refunding credit note, `charge.dispute.created` is
        recorded; any other type answers 200 `ignored`. A bad signature or a timestamp outside
        the tolerance window answers 400; the same event `id` again answers 200 `duplicate`
        and changes nothing. No API key: the signature is the authentication."""
        secret = settings.stripe_webhook_secret
        if secret is None or not secret.get_secret_value():
            raise stripe_events.StripeNotConfigured(
                "Stripe webhooks are not configured: set BILLING_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret"
            )
        body = await request.body()
        try:
            event = stripe_events.verify(
                body=body,
                header=request.headers.get(stripe_events.SIGNATURE_HEADER),
                secret=secret.get_secret_value(),
                now=runtime.clock.now(),
                tolerance_s=settings.webhook_tolerance_s,
            )
        except BadSignature:
            # Refused before any transaction opens: there is no commit to wait for.
            metrics.webhooks.labels("bad_signature").inc()
            raise
        async with runtime.uow() as tx:
            return await stripe_events.receive(tx, ctx, event)

    return api

"""The scheduled job that sends due steps: claim, render, send, record.

Delivery is at least once: the send happens between two transactions (the claim and the
record), so a crash after the transport accepted an email and before ``record_sent`` committed
sends it again once the claim lapses. The resend carries the same Message-ID (the step's id),
which receivers use to drop duplicates, and the file transport simply rewrites the same file.
Closing that gap for SMTP needs an outbox of emails; for now it stays at this.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from jinja2 import TemplateError

from services.nurture import domain, handlers
from services.nurture.content import Renderer
from services.nurture.metrics import NurtureMetrics
from services.nurture.settings import Settings
from services.nurture.transport import Transport, compose
from shared.clock import Clock
from shared.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


class Sender:
    """Sends what is due at the business clock's "now", a batch per pass."""

    def __init__(
        self,
        *,
        settings: Settings,
        uow: UnitOfWorkFactory,
        clock: Clock,
        renderer: Renderer,
        transport: Transport,
        metrics: NurtureMetrics,
    ) -> None:
        self.settings = settings
        self.uow = uow
        self.clock = clock
        self.renderer = renderer
        self.transport = transport
        self.metrics = metrics
        self.lease = timedelta(seconds=settings.send_lease_s)

    async def tick(self, now: datetime) -> None:
        """One pass: send batches until nothing due is left, then refresh the queue gauge."""
        while await self.send_batch(now) == self.settings.send_batch_size:
            pass
        async with self.uow() as tx:
            self.metrics.queue_depth.set(await handlers.queue_depth(tx, now=now))

    async def send_batch(self, now: datetime) -> int:
        async with self.uow() as tx:
            claimed = await handlers.claim_due_steps(
                tx, now=now, limit=self.settings.send_batch_size, lease=self.lease
            )
        for step in claimed:
            await self.deliver(step, now=now)
        return len(claimed)

    async def deliver(self, step: handlers.Outgoing, *, now: datetime) -> None:
        decision = domain.delivery(
            category=step.category, consent_marketing=step.consent_marketing, address=step.email, erased=step.erased
        )
        if not decision.send:
            await self._suppress(step, decision.reason or "not_allowed")
            return
        assert step.email is not None
        unsubscribe_url = (
            f"{self.settings.public_url.rstrip('/')}/unsubscribe?token="
            f"{domain.unsubscribe_token(self.settings.secret_key.get_secret_value(), step.lead_id)}"
        )
        try:
            rendered = self.renderer.render(
                step.template,
                step.language,
                {
                    "name": step.name or "",
                    "first_name": domain.first_name(step.name),
                    "brand": self.settings.brand_name,
                    "unsubscribe_url": unsubscribe_url,
                },
            )
        except TemplateError:
            # A broken template is an operator's fix: the step stays claimed and is retried
            # when the claim lapses, and the error is visible in the row and the log.
            log.exception("rendering %s for step %s failed", step.template, step.id)
            await self._failed(step, "template error")
            return
        try:
            message = compose(
                message_id=step.id,
                sender=self.settings.mail_from,
                to_name=step.name,
                to_address=step.email,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                unsubscribe_url=unsubscribe_url,
                date=now,
            )
        except ValueError:
            await self._suppress(step, "invalid_address")
            return
        try:
            await self.transport.send(message)
        except Exception as exc:  # any transport trouble: keep the step, try again later
            log.warning("sending step %s to the transport failed: %r", step.id, exc)
            await self._failed(step, repr(exc))
            return
        async with self.uow() as tx:
            recorded = await handlers.record_sent(
                tx,
                step,
                subject=rendered.subject,
                body_text=rendered.text,
                language=rendered.language,
                to_address=step.email,
            )
        if recorded:
            self.metrics.sent.labels(step.sequence, str(step.step), step.category).inc()

    async def _suppress(self, step: handlers.Outgoing, reason: str) -> None:
        async with self.uow() as tx:
            done = await handlers.suppress_step(tx, step, reason=reason)
        if done:
            self.metrics.suppressed.labels(reason).inc()

    async def _failed(self, step: handlers.Outgoing, error: str) -> None:
        self.metrics.send_failures.inc()
        async with self.uow() as tx:
            await handlers.record_failure(tx, step, error=error)

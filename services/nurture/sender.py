"""The scheduled job that sends due steps: claim, render, send, record.

Claiming applies the sending policy (step conditions, quiet hours in the person's time zone,
the weekly cap on marketing emails) in the claiming transaction. A failed send is retried with
exponential backoff on the business clock (the claim is simply extended) and marked failed
after ``max_send_attempts``; a permanent refusal (5xx) is a bounce and is not retried.

Never twice: ``record_sent`` only marks a step that is still pending, so a step recorded as sent
is never sent again, and each retry carries the same Message-ID (the step's id). The one gap
left is a crash after the SMTP server accepted an email and before ``record_sent`` committed:
the step is then sent again when the claim lapses, with the same Message-ID, which receivers
use to drop duplicates (the file transport simply rewrites the same file).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import TemplateError

from services.nurture import domain, handlers
from services.nurture.content import Renderer
from services.nurture.metrics import NurtureMetrics
from services.nurture.settings import Settings
from services.nurture.transport import PermanentFailure, Transport, compose
from shared.clock import Clock
from shared.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


class Links:
    """Public links in an email, each signed for its message and purpose."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.public_url.rstrip("/")
        self.secret = settings.secret_key.get_secret_value()

    def unsubscribe(self, lead_id: Any, message_id: Any) -> str:
        return f"{self.base}/unsubscribe?token={domain.unsubscribe_token(self.secret, lead_id)}&m={message_id}"

    def open_pixel(self, message_id: Any) -> str:
        return f"{self.base}/t/o/{domain.message_token(self.secret, 'open', message_id)}.gif"

    def click(self, message_id: Any, url: str) -> str:
        token = domain.message_token(self.secret, "click", message_id, url)
        return f"{self.base}/t/c/{token}?u={quote(url, safe='')}"

    def survey(self, message_id: Any, score: int) -> str:
        return f"{self.base}/survey/{domain.message_token(self.secret, 'survey', message_id)}?score={score}"


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
        builtin: domain.Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.uow = uow
        self.clock = clock
        self.renderer = renderer
        self.transport = transport
        self.metrics = metrics
        self.builtin = builtin or domain.Catalog({})
        self.links = Links(settings)
        self.lease = timedelta(seconds=settings.send_lease_s)
        self.policy = handlers.Policy(
            quiet=domain.QuietHours(settings.quiet_hours_start, settings.quiet_hours_end),
            cap=settings.marketing_cap_per_week,
        )

    async def tick(self, now: datetime) -> None:
        """One pass: send batches until nothing due is left, then refresh the queue gauge."""
        while await self.send_batch(now) == self.settings.send_batch_size:
            pass
        async with self.uow() as tx:
            self.metrics.queue_depth.set(await handlers.queue_depth(tx, now=now))

    async def send_batch(self, now: datetime) -> int:
        async with self.uow() as tx:
            result = await handlers.claim_due_steps(
                tx, now=now, limit=self.settings.send_batch_size, lease=self.lease, policy=self.policy
            )
            catalog = await handlers.current_catalog(tx, self.builtin)
        assert isinstance(result, handlers.ClaimResult)
        for reason in result.deferred:
            self.metrics.deferred.labels(reason).inc()
        if result.skipped:
            self.metrics.skipped.inc(result.skipped)
        for step in result.claimed:
            await self.deliver(step, now=now, catalog=catalog)
        return len(result.claimed) + len(result.deferred) + result.skipped

    def context(self, step: handlers.Outgoing) -> dict[str, Any]:
        return {
            "name": step.name or "",
            "first_name": domain.first_name(step.name),
            "brand": self.settings.brand_name,
            "unsubscribe_url": self.links.unsubscribe(step.lead_id, step.id),
            "data": step.context,
            "days_before": step.variables.get("days_before"),
            "payment_update_url": self.settings.payment_update_url,
            "booking_url": self.settings.booking_url,
            "click": lambda url: self.links.click(step.id, url),
            "survey_url": lambda score: self.links.survey(step.id, int(score)),
            "survey": step.sequence,
        }

    async def deliver(self, step: handlers.Outgoing, *, now: datetime, catalog: domain.Catalog | None = None) -> None:
        decision = domain.delivery(
            category=step.category,
            consent_marketing=step.consent_marketing,
            address=step.email,
            erased=step.erased,
            bounced=step.bounced,
        )
        if not decision.send:
            await self._suppress(step, decision.reason or "not_allowed", catalog)
            return
        assert step.email is not None
        context = self.context(step)
        try:
            rendered = self.renderer.render(step.template, step.language, context)
        except TemplateError:
            # A broken template is an operator's fix: the step is retried with backoff and the
            # error is visible in the row and the log.
            log.exception("rendering %s for step %s failed", step.template, step.id)
            await self._failed(step, "template error", now)
            return
        pixel = f'<img src="{self.links.open_pixel(step.id)}" width="1" height="1" alt="" style="border:0">'
        html = rendered.html.replace("</body>", f"{pixel}\n</body>") if "</body>" in rendered.html else rendered.html + pixel
        try:
            message = compose(
                message_id=step.id,
                sender=self.settings.mail_from,
                to_name=step.name,
                to_address=step.email,
                subject=rendered.subject,
                text=rendered.text,
                html=html,
                unsubscribe_url=context["unsubscribe_url"],
                date=now,
            )
        except ValueError:
            await self._suppress(step, "invalid_address", catalog)
            return
        try:
            await self.transport.send(message)
        except PermanentFailure as exc:
            log.warning("the server refused step %s for good: %s", step.id, exc)
            async with self.uow() as tx:
                done = await handlers.record_send_bounce(tx, step, reason=str(exc), catalog=catalog or self.builtin)
            if done:
                self.metrics.bounced.labels(step.sequence, str(step.step)).inc()
            return
        except Exception as exc:  # any other transport trouble: keep the step, try again later
            log.warning("sending step %s to the transport failed: %r", step.id, exc)
            await self._failed(step, repr(exc), now)
            return
        async with self.uow() as tx:
            recorded = await handlers.record_sent(
                tx,
                step,
                subject=rendered.subject,
                body_text=rendered.text,
                language=rendered.language,
                to_address=step.email,
                catalog=catalog,
            )
        if recorded:
            self.metrics.sent.labels(step.sequence, str(step.step), step.category).inc()
            if step.due_at is not None:
                self.metrics.send_latency.observe(max((self.clock.now() - step.due_at).total_seconds(), 0.0))

    async def _suppress(self, step: handlers.Outgoing, reason: str, catalog: domain.Catalog | None) -> None:
        async with self.uow() as tx:
            done = await handlers.suppress_step(tx, step, reason=reason, catalog=catalog)
        if done:
            self.metrics.suppressed.labels(reason).inc()

    async def _failed(self, step: handlers.Outgoing, error: str, now: datetime) -> None:
        self.metrics.send_failures.inc()
        retry = (
            domain.retry_at(
                now,
                step.attempts,
                base=timedelta(seconds=self.settings.retry_base_s),
                ceiling=timedelta(seconds=self.settings.retry_max_s),
            )
            if step.attempts < self.settings.max_send_attempts
            else None
        )
        async with self.uow() as tx:
            gave_up = await handlers.record_failure(tx, step, error=error, retry_at=retry)
        if gave_up:
            self.metrics.send_gave_up.inc()

"""The scheduled job that sends due steps: claim, render, send, record.

A pass works in batches of ``send_batch_size``: one transaction claims the due steps (reading
what it needs of their people in a few queries), each step is rendered and sent, then one
transaction records what became of them all.

Claiming applies the sending policy (``settings.sending``: step conditions, quiet hours in the
person's time zone, the cap on marketing emails in any week) in the claiming transaction. A
failed send is retried with exponential backoff on the business clock (the claim is simply
extended) and marked failed after ``max_send_attempts`` (``settings.retry``); a permanent
refusal (5xx) is a bounce and is not retried. What a pass did is counted once the transaction
that recorded it committed.

One step never stops the others (``shared.jobs``): a step the sending policy, the rendering
or the recording fails on (an odd value, a bug) is a failure of the ``nurture.sender`` job. It
is held with the job's backoff (claimed until its next attempt), kept in ``job_failures`` with
its reason, counted and alerted on, and marked failed when the job gives up; the batch goes on.
A claim that fails as a whole is split into one claim per step to find the one at fault.

Never twice: ``record_sent`` only marks a step that is still pending, so a step recorded as sent
is never sent again, and each retry carries the same Message-ID (the step's id). The one gap
left is a crash after the SMTP server accepted an email and before its batch was recorded: the
batch's sent steps are then sent again when their claims lapse, with the same Message-IDs, which
receivers use to drop duplicates (the file transport simply rewrites the same file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from jinja2 import TemplateError

from services.nurture import domain, sending, tracking
from services.nurture.catalog import current_catalog
from services.nurture.content import Renderer
from services.nurture.metrics import NurtureMetrics
from services.nurture.settings import Settings
from services.nurture.transport import PermanentFailure, Transport, compose
from shared.clock import Clock
from shared.jobs import Failure, Jobs, infrastructure
from shared.pauses import Pauses
from shared.uow import UnitOfWork, UnitOfWorkFactory

JOB = "nurture.sender"

log = logging.getLogger(__name__)


class Links:
    """Public links in an email, each signed for its message and purpose."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.public_url.rstrip("/")
        self.secret = settings.secret_key.get_secret_value()

    def unsubscribe(self, *, lead_id: Any, message_id: Any) -> str:
        return f"{self.base}/unsubscribe?token={domain.unsubscribe_token(self.secret, lead_id)}&m={message_id}"

    def open_pixel(self, message_id: Any) -> str:
        return f"{self.base}/t/o/{domain.message_token(self.secret, 'open', message_id)}.gif"

    def click(self, message_id: Any, url: str) -> str:
        token = domain.message_token(self.secret, "click", message_id, url)
        return f"{self.base}/t/c/{token}?u={quote(url, safe='')}"

    def survey(self, message_id: Any, score: int) -> str:
        return f"{self.base}/survey/{domain.message_token(self.secret, 'survey', message_id)}?score={score}"


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed step: ``sent`` (``sent`` says what), ``suppressed`` (``detail``
    says why), ``bounced`` (the server's refusal), ``failed`` (the transport's error;
    ``retry_at`` None when no attempt is left) or ``poisoned`` (writing it failed: a job failure)."""

    step: sending.Outgoing
    kind: Literal["sent", "suppressed", "bounced", "failed", "poisoned"]
    detail: str = ""
    sent: sending.Sent | None = None
    retry_at: datetime | None = None


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
        jobs: Jobs,
        builtin: domain.Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.uow = uow
        self.clock = clock
        self.renderer = renderer
        self.transport = transport
        self.metrics = metrics
        self.job = jobs(JOB)
        # Steps with a failure on record (usually none), read once a pass: their rows go when
        # they succeed.
        self._failing: set[str] | None = None
        self.builtin = builtin or domain.Catalog({})
        self.links = Links(settings)
        self.lease = timedelta(seconds=settings.send_lease_s)
        self.policy: domain.SendingPolicy = settings.sending

    async def tick(self, now: datetime) -> None:
        """One pass: count what is due, send batches until nothing due is left, count again
        if anything was handled. The gauge is set before the pass as well: a pass through a long
        queue takes minutes, and until it ends the gauge would still say what the previous
        (empty) pass left. A pass that found nothing to do (an idle tick) counts once."""
        self._failing = None
        async with self.uow() as tx:
            self.metrics.queue_depth.set(await sending.queue_depth(tx, now=now))
        handled = first = await self.send_batch(now)
        while handled == self.settings.send_batch_size:
            handled = await self.send_batch(now)
        if first:
            async with self.uow() as tx:
                self.metrics.queue_depth.set(await sending.queue_depth(tx, now=now))

    async def send_batch(self, now: datetime) -> int:
        try:
            async with self.uow() as tx:
                if self._failing is None:
                    self._failing = set(await self.job.failures(tx.session))
                result = await sending.claim_due_steps(
                    tx, now=now, limit=self.settings.send_batch_size, lease=self.lease, policy=self.policy
                )
                catalog = await current_catalog(tx, self.builtin)
                self._count_claim(tx, result)
        except Exception as exc:
            if infrastructure(exc):
                raise
            log.warning("claiming a batch failed (%r); claiming each step alone", exc)
            result, catalog = await self._claim_alone(now)
        for poisoned in result.poisoned:
            await self._poison(poisoned.id, poisoned.error, now)
        # Outcomes are recorded together at the end, unless sending is slow: past half the lease,
        # what went out is recorded as it goes (as each was before batching), so no sent step
        # waits unrecorded for its claim to lapse and be taken again.
        halfway = self.clock.now() + self.lease / 2
        outcomes: list[Outcome] = []
        pause = Pauses()  # rendering and writing a batch of e-mails must not hold the loop
        for step in result.claimed:
            outcomes.append(await self.attempt(step, now=now))
            await pause()
            if self.clock.now() >= halfway:
                await self.record(outcomes, catalog=catalog)
                outcomes = []
        await self.record(outcomes, catalog=catalog)
        return len(result.claimed) + len(result.deferred) + result.skipped + len(result.poisoned)

    async def _claim_alone(self, now: datetime) -> tuple[sending.ClaimResult, domain.Catalog]:
        """Claim the due steps one by one, so the one whose claim fails is held and the others go."""
        async with self.uow() as tx:
            ids = await sending.due_step_ids(tx, now=now, limit=self.settings.send_batch_size)
            catalog = await current_catalog(tx, self.builtin)
        result = sending.ClaimResult([], [])
        for step_id in ids:
            try:
                async with self.uow() as tx:
                    one = await sending.claim_due_steps(
                        tx, now=now, limit=1, lease=self.lease, policy=self.policy, only=[step_id]
                    )
                    self._count_claim(tx, one)
            except Exception as exc:
                if infrastructure(exc):
                    raise
                result.poisoned.append(sending.Poisoned(step_id, exc))
                continue
            result.claimed += one.claimed
            result.deferred += one.deferred
            result.skipped += one.skipped
            result.poisoned += one.poisoned
        return result, catalog

    async def _poison(self, step_id: Any, error: BaseException | str, now: datetime) -> Failure:
        """A job failure on one step: kept with its reason, the step held until the next attempt
        (or failed when the job gives up), in one transaction."""

        async def hold(tx: UnitOfWork, failure: Failure) -> None:
            await sending.hold_step(tx, step_id, error=failure.reason, retry_at=failure.next_attempt_at)

        return await self.job.fail(self.uow, step_id, error, now=now, also=hold)

    def context(self, step: sending.Outgoing) -> dict[str, Any]:
        return {
            "name": step.name or "",
            "first_name": domain.first_name(step.name),
            "brand": self.settings.brand_name,
            "unsubscribe_url": self.links.unsubscribe(lead_id=step.lead_id, message_id=step.id),
            "data": step.context,
            "days_before": step.variables.get("days_before"),
            "payment_update_url": self.settings.payment_update_url,
            "booking_url": self.settings.booking_url,
            "click": lambda url: self.links.click(step.id, url),
            "survey_url": lambda score: self.links.survey(step.id, int(score)),
            "survey": step.sequence,
        }

    async def attempt(self, step: sending.Outgoing, *, now: datetime) -> Outcome:
        """Write and send one claimed step; what happened is recorded with the rest of its batch.
        Whatever fails writing it (an odd name, language or context a template or the composer
        chokes on) is this step's failure, not its batch's."""
        try:
            return await self._attempt(step, now=now)
        except Exception as exc:
            log.exception("writing step %s failed", step.id)
            return Outcome(step, "poisoned", f"{type(exc).__name__}: {exc}")

    async def _attempt(self, step: sending.Outgoing, *, now: datetime) -> Outcome:
        decision = domain.delivery(
            category=step.category,
            consent_marketing=step.consent_marketing,
            address=step.email,
            erased=step.erased,
            bounced=step.bounced,
        )
        if not decision.send:
            return Outcome(step, "suppressed", decision.reason or "not_allowed")
        assert step.email is not None
        context = self.context(step)
        try:
            rendered = self.renderer.render(step.template, step.language, context)
        except TemplateError:
            # A broken template is an operator's fix: the step is retried with backoff and the
            # error is visible in the row and the log.
            log.exception("rendering %s for step %s failed", step.template, step.id)
            return self._failed(step, "template error", now)
        pixel = f'<img src="{self.links.open_pixel(step.id)}" width="1" height="1" alt="" style="border:0">'
        html = (
            rendered.html.replace("</body>", f"{pixel}\n</body>")
            if "</body>" in rendered.html
            else rendered.html + pixel
        )
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
            return Outcome(step, "suppressed", "invalid_address")
        try:
            await self.transport.send(message)
        except PermanentFailure as exc:
            log.warning("the server refused step %s for good: %s", step.id, exc)
            return Outcome(step, "bounced", str(exc))
        except Exception as exc:  # any other transport trouble: keep the step, try again later
            log.warning("sending step %s to the transport failed: %r", step.id, exc)
            return self._failed(step, repr(exc), now)
        sent = sending.Sent(
            step, subject=rendered.subject, body_text=rendered.text, language=rendered.language, to_address=step.email
        )
        return Outcome(step, "sent", sent=sent)

    def _failed(self, step: sending.Outgoing, error: str, now: datetime) -> Outcome:
        retry = domain.next_attempt_at(now, step.attempts, policy=self.settings.retry)
        return Outcome(step, "failed", error, retry_at=retry)

    async def record(self, outcomes: list[Outcome], *, catalog: domain.Catalog) -> None:
        """Record a batch's outcomes in one transaction. Should that fail, each is recorded alone,
        so one that cannot be recorded does not leave the others' sent emails unrecorded (to be
        sent again when their claims lapse); one that cannot be recorded even alone is a job
        failure (held with backoff). A database away is raised, as it is no step's fault."""
        now = self.clock.now()
        for poisoned in [o for o in outcomes if o.kind == "poisoned"]:
            await self._poison(poisoned.step.id, poisoned.detail, now)
        outcomes = [o for o in outcomes if o.kind != "poisoned"]
        if not outcomes:
            return
        try:
            async with self.uow() as tx:
                await self._apply(tx, outcomes, catalog)
        except Exception as exc:
            if infrastructure(exc):
                raise
            if len(outcomes) == 1:
                await self._poison(outcomes[0].step.id, exc, now)
                return
            log.exception("recording %d outcomes together failed; recording each alone", len(outcomes))
        else:
            return
        for outcome in outcomes:
            try:
                async with self.uow() as tx:
                    await self._apply(tx, [outcome], catalog)
            except Exception as exc:
                if infrastructure(exc):
                    raise
                await self._poison(outcome.step.id, exc, now)

    async def _apply(self, tx: UnitOfWork, outcomes: list[Outcome], catalog: domain.Catalog) -> None:
        """Record outcomes in ``tx``, and count those that took effect once it committed. The
        sent ones first: they left, whatever a bounce of the same person in the batch ends."""
        recorded = await sending.record_sent(tx, [o.sent for o in outcomes if o.sent is not None], catalog=catalog)
        if self._failing:
            cleared = [o.step.id for o in outcomes if o.kind != "failed" and str(o.step.id) in self._failing]
            await self.job.clear(tx, cleared)
        done = [o for o in outcomes if o.sent is not None and o.step.id in recorded]
        for o in outcomes:
            if o.kind == "suppressed":
                took = await sending.suppress_step(tx, o.step, reason=o.detail, catalog=catalog)
            elif o.kind == "bounced":
                took = await tracking.record_send_bounce(
                    tx, o.step, reason=o.detail, catalog=catalog, metrics=self.metrics
                )
            elif o.kind == "failed":
                took = await sending.record_failure(tx, o.step, error=o.detail, retry_at=o.retry_at)
            else:
                continue
            if took:
                done.append(o)
        failures = sum(1 for o in outcomes if o.kind == "failed")
        tx.after_commit(lambda: self._count(done, failures=failures))

    def _count_claim(self, tx: UnitOfWork, result: sending.ClaimResult) -> None:
        """Steps a claim moved later or skipped, counted once it committed."""

        def count() -> None:
            for reason in result.deferred:
                self.metrics.deferred.labels(reason).inc()
            if result.skipped:
                self.metrics.skipped.inc(result.skipped)

        tx.after_commit(count)

    def _count(self, done: list[Outcome], *, failures: int) -> None:
        """Metrics of what was recorded, after its commit: ``failures`` sends the transport
        refused, and what took effect. Sent emails are counted from ``email.sent``
        (``NurtureMetrics.count_event``), bounces where ``email.bounced`` is emitted."""
        if failures:
            self.metrics.send_failures.inc(failures)
        for o in done:
            if o.kind == "sent":
                if o.step.due_at is not None:
                    self.metrics.send_latency.observe(max((self.clock.now() - o.step.due_at).total_seconds(), 0.0))
            elif o.kind == "suppressed":
                self.metrics.suppressed.labels(o.detail).inc()
            elif o.kind == "failed":
                self.metrics.send_gave_up.inc()

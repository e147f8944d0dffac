"""Issue 15: one record never stops a scheduled job. Each service runs with a real broker and
database on a test-owned clock; rows with odd values are written straight into its database,
as rows stored before the edge validated them would be; then the clock moves and the job runs.
The records around the odd one get their e-mail, invoice, dunning step, points, health and
tier; the odd one is kept in ``job_failures`` with its reason, retried with backoff and counted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.billing.app import create_app as billing_app
from services.billing.settings import Settings as BillingSettings
from services.billing.store import DunningCase, Invoice, Subscription
from services.nurture.app import create_app as nurture_app
from services.nurture.settings import Settings as NurtureSettings
from services.nurture.store import Contact, ScheduledMessage
from services.retention.app import create_app as retention_app
from services.retention.settings import Settings as RetentionSettings
from services.retention.store import Client, ClientEvent, LoyaltyAward
from shared import events as ev
from shared.clock import SimulatedClock
from shared.db import JobFailureRow
from shared.events import make_event
from shared.jobs import Backoff
from tests.integration.test_billing_retainers import start_retainer
from tests.integration.test_billing_service import send
from tests.support import as_json, eventually, run_service, service_settings

pytestmark = pytest.mark.integration


class ManualClock(SimulatedClock):
    simulated = False  # moved by the test alone, never by the shared clock topic


async def failures(svc: Any, job: str) -> dict[str, JobFailureRow]:
    async with svc.runtime.uow.sessions() as session:
        return {r.key: r for r in await session.scalars(select(JobFailureRow).where(JobFailureRow.job == job))}


def counted(svc: Any, job: str) -> float:
    labels = {"service": svc.runtime.name, "job": job}
    return svc.runtime.registry.get_sample_value("clientflow_job_failures_total", labels) or 0.0


async def jump(svc: Any, clock: ManualClock, moment: datetime, check) -> Any:
    clock.advance_to(moment)  # the scheduled jobs wake when the business clock jumps
    return await eventually(check, timeout=30)


# --------------------------------------------------------------------------- nurture


async def test_nurture_sends_everyones_follow_up_past_a_lead_whose_time_zone_is_a_directory(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    """Finding 1 through the running service: "America" and "Etc" used to fail every send pass."""
    t0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
    clock = ManualClock(t0)
    settings = service_settings(
        NurtureSettings,
        bootstrap=kafka_bootstrap,
        database_url=database_url,
        data_dir=tmp_path,
        send_interval_s=0.2,
        quiet_hours_start=21,
        quiet_hours_end=8,
        marketing_cap_per_week=10,
    )
    tag = uuid.uuid4().hex[:8]
    leads = {name: uuid.uuid4() for name in ("good1", "America", "good2", "Etc", "good3")}
    async with run_service(nurture_app(settings, clock=clock), settings.port) as svc:
        await send(
            kafka_bootstrap,
            *(
                make_event(
                    "lead.captured",
                    ev.LeadCaptured(
                        name=name,
                        email=f"{name.lower()}-{tag}@example.com",
                        channel="website",
                        consent_marketing=True,
                        timezone="Europe/Paris",
                        fit_score=60,
                    ),
                    producer="leads",
                    occurred_at=t0,
                    lead_id=lead_id,
                )
                for name, lead_id in leads.items()
            ),
        )

        async def steps(step: int) -> dict[uuid.UUID, str]:
            async with svc.runtime.uow.sessions() as session:
                rows = await session.execute(
                    select(ScheduledMessage.lead_id, ScheduledMessage.status).where(
                        ScheduledMessage.lead_id.in_(leads.values()),
                        ScheduledMessage.sequence == "welcome",
                        ScheduledMessage.step == step,
                    )
                )
                return dict(rows.all())

        async def welcomed() -> bool:
            return set((await steps(0)).values()) == {"sent"} and len(await steps(0)) == len(leads)

        await eventually(welcomed, timeout=30)
        async with svc.runtime.uow() as tx:  # stored before capture validated the zone
            for name in ("America", "Etc"):
                (await tx.session.get(Contact, leads[name])).timezone = name  # type: ignore[union-attr]

        async def followed_up() -> dict[uuid.UUID, str]:
            found = await steps(1)
            return found if len(found) == len(leads) and set(found.values()) == {"sent"} else {}

        await jump(svc, clock, t0 + timedelta(days=3, hours=1), followed_up)  # 14:00 in Paris


# --------------------------------------------------------------------------- billing


async def test_billing_cycle_and_dunning_go_on_past_an_odd_subscription_and_invoice(
    kafka_bootstrap: str, database_url: str
) -> None:
    """An odd currency (a row stored before the edge checked it) fails one subscription's monthly
    invoice and one invoice's dunning; the others are billed and chased. Dunning used to stop at
    the first invoice that failed; the cycle kept no record of what failed, nor backoff."""
    start = datetime(2031, 1, 15, 12, tzinfo=UTC)
    clock = ManualClock(start)
    settings = service_settings(BillingSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    odd, good1, good2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with run_service(billing_app(settings, clock=clock), settings.port) as svc:
        subs: dict[uuid.UUID, str] = {}
        for lead_id in (odd, good1, good2):  # the odd one first: its invoice is chased first
            _, sub = await start_retainer(svc, kafka_bootstrap, lead_id)
            subs[lead_id] = sub["subscription_id"]

        async def first_invoices() -> dict[uuid.UUID, Invoice]:
            async with svc.runtime.uow.sessions() as session:
                rows = list(
                    await session.scalars(
                        select(Invoice).where(Invoice.lead_id.in_(subs), Invoice.kind == "subscription")
                    )
                )
            return {i.lead_id: i for i in rows} if len(rows) == 3 else {}

        first = await eventually(first_invoices, timeout=30)

        async def currency(code: str) -> None:
            """An issued invoice is never rewritten by the ORM; the row is written as it was stored."""
            async with svc.runtime.uow() as tx:
                (await tx.session.get(Subscription, uuid.UUID(subs[odd]))).currency = code  # type: ignore[union-attr]
                await tx.session.execute(update(Invoice).where(Invoice.id == first[odd].id).values(currency=code))

        await currency("ZZZ")

        async def billed_and_chased() -> dict[str, Any]:
            async with svc.runtime.uow.sessions() as session:
                february = set(
                    await session.scalars(
                        select(Invoice.lead_id).where(
                            Invoice.lead_id.in_(subs),
                            Invoice.kind == "subscription",
                            Invoice.period_start == datetime(2031, 2, 1, tzinfo=UTC),
                        )
                    )
                )
                states = dict(
                    (
                        await session.execute(
                            select(DunningCase.lead_id, DunningCase.state).where(DunningCase.lead_id.in_(subs))
                        )
                    ).all()
                )
            cycle, dunning = await failures(svc, "billing.cycle"), await failures(svc, "billing.dunning")
            done = february == {good1, good2} and states.get(good1) == states.get(good2) == "overdue"
            return {"states": states, "cycle": cycle, "dunning": dunning} if done and cycle and dunning else {}

        february = datetime(2031, 2, 5, 12, tzinfo=UTC)  # the first invoices are past due
        seen = await jump(svc, clock, february, billed_and_chased)
        (cycle,) = seen["cycle"].values()
        assert cycle.key == subs[odd] and cycle.attempts == 1 and "ZZZ" in cycle.reason
        assert cycle.next_attempt_at == february + Backoff().base and not cycle.given_up
        (dunned,) = seen["dunning"].values()
        assert dunned.key == str(first[odd].id) and "ZZZ" in dunned.reason
        assert seen["states"].get(odd) is None  # its case opened, its state not moved
        assert counted(svc, "billing.cycle") == 1 and counted(svc, "billing.dunning") == 1

        # Put right, it goes at its next attempt, and its failure is forgotten.
        await currency("EUR")

        async def recovered() -> bool:
            async with svc.runtime.uow.sessions() as session:
                billed = await session.scalar(
                    select(Invoice.id).where(
                        Invoice.lead_id == odd, Invoice.period_start == datetime(2031, 2, 1, tzinfo=UTC)
                    )
                )
                state = await session.scalar(select(DunningCase.state).where(DunningCase.lead_id == odd))
            left = await failures(svc, "billing.cycle") | await failures(svc, "billing.dunning")
            return billed is not None and state == "overdue" and not left

        await jump(svc, clock, february + Backoff().base + timedelta(minutes=1), recovered)


# --------------------------------------------------------------------------- retention


def _event(event_type: str, payload: ev.Payload, lead_id: uuid.UUID, when: datetime) -> ev.Envelope:
    return make_event(event_type, payload, producer="billing", occurred_at=when, lead_id=lead_id)


async def test_retention_reviews_and_loyalty_go_on_past_odd_clients(kafka_bootstrap: str, database_url: str) -> None:
    """A timeline entry stored as a list instead of an object fails one client's health review,
    an unreadable leaked amount fails one client's tier, a NaN amount fails one loyalty award.
    The review used to do a page of 200 clients (and the awards, and the price changes) in one
    transaction, so each of them stopped everyone's review; a tier review answered 500."""
    now = datetime(2026, 4, 1, 9, tzinfo=UTC)
    clock = ManualClock(now)
    settings = service_settings(RetentionSettings, bootstrap=kafka_bootstrap, database_url=database_url)
    names = ("health", "tier", "loyalty", "good1", "good2")
    leads = {name: uuid.uuid4() for name in names}
    tag = uuid.uuid4().hex[:8]
    async with run_service(retention_app(settings, clock=clock), settings.port) as svc:
        events = []
        for name, lead_id in leads.items():
            paid_at = now - timedelta(days=20)  # the refund window (14 days) has passed
            events += [
                make_event(
                    "lead.captured",
                    ev.LeadCaptured(name="X", email=f"{name}-{tag}@example.com", channel="web", fit_score=60),
                    producer="leads",
                    occurred_at=now - timedelta(days=90),
                    lead_id=lead_id,
                ),
                _event(
                    "deposit.cleared",
                    ev.DepositCleared(
                        deal_id=uuid.uuid4(),
                        invoice_id=uuid.uuid4(),
                        amount=Decimal(300),
                        currency="EUR",
                        cleared_at=now - timedelta(days=60),
                    ),
                    lead_id,
                    now - timedelta(days=60),
                ),
                _event(
                    "payment.succeeded",
                    ev.PaymentSucceeded(
                        payment_id=uuid.uuid4(),
                        invoice_id=uuid.uuid4(),
                        amount=Decimal(1000),
                        currency="EUR",
                        method="card",
                        paid_at=paid_at,
                        invoice_paid=True,
                    ),
                    lead_id,
                    paid_at,
                ),
            ]
        await send(kafka_bootstrap, *events)

        async def awards() -> dict[uuid.UUID, LoyaltyAward]:
            async with svc.runtime.uow.sessions() as session:
                rows = {
                    a.lead_id: a
                    for a in await session.scalars(select(LoyaltyAward).where(LoyaltyAward.lead_id.in_(leads.values())))
                }
            return rows if len(rows) == len(leads) else {}

        pending = await eventually(awards, timeout=30)
        async with svc.runtime.uow() as tx:
            (await tx.session.get(LoyaltyAward, pending[leads["loyalty"]].invoice_id)).amount = Decimal("NaN")  # type: ignore[union-attr]
            tx.session.add(
                ClientEvent(
                    lead_id=leads["health"],
                    event_id=uuid.uuid4(),
                    type="feedback.received",
                    at=now - timedelta(days=1),
                    detail=["not", "an", "object"],
                )
            )
            tx.session.add(
                ClientEvent(
                    lead_id=leads["tier"],
                    event_id=uuid.uuid4(),
                    type="deal.change_requested",
                    at=now - timedelta(days=1),
                    detail={"leaked": "n/a"},
                )
            )

        later = now + timedelta(hours=1)

        async def reviewed() -> dict[str, Any]:
            async with svc.runtime.uow.sessions() as session:
                assessed = dict(
                    (
                        await session.execute(
                            select(Client.lead_id, Client.health_assessed_at).where(Client.lead_id.in_(leads.values()))
                        )
                    ).all()
                )
                status = dict(
                    (
                        await session.execute(
                            select(LoyaltyAward.lead_id, LoyaltyAward.status).where(
                                LoyaltyAward.lead_id.in_(leads.values())
                            )
                        )
                    ).all()
                )
            health, loyalty = await failures(svc, "retention.health"), await failures(svc, "retention.loyalty")
            if not (health and loyalty) or sum(at == later for at in assessed.values()) < len(names) - 1:
                return {}
            return {"assessed": assessed, "status": status, "health": health, "loyalty": loyalty}

        seen = await jump(svc, clock, later, reviewed)
        assert {n: seen["assessed"][leads[n]] == later for n in names} == {n: n != "health" for n in names}
        assert {n: seen["status"][leads[n]] for n in names} == {
            n: "pending" if n == "loyalty" else "awarded" for n in names
        }
        assert (
            list(seen["health"]) == [str(leads["health"])]
            and "AttributeError" in seen["health"][str(leads["health"])].reason
        )
        assert list(seen["loyalty"]) == [str(pending[leads["loyalty"]].invoice_id)]
        assert counted(svc, "retention.health") >= 1 and counted(svc, "retention.loyalty") >= 1

        review = as_json(await svc.client.post("/reviews"))  # answered 500 while one client failed
        reviewed_ids = {c["lead_id"] for c in review["changes"]}
        assert str(leads["tier"]) not in reviewed_ids and {str(leads[n]) for n in ("good1", "good2")} <= reviewed_ids
        (tier,) = (await failures(svc, "retention.tiers")).values()
        assert tier.key == str(leads["tier"]) and "InvalidOperation" in tier.reason

        # Put right, the client joins the period's review at the next poll after its backoff.
        async with svc.runtime.uow() as tx:
            rows = await tx.session.scalars(
                select(ClientEvent).where(
                    ClientEvent.lead_id == leads["tier"], ClientEvent.type == "deal.change_requested"
                )
            )
            for row in rows:
                row.detail = {"leaked": "0"}

        async def joined() -> bool:
            latest = as_json(await svc.client.get("/reviews/latest"))
            return str(leads["tier"]) in {c["lead_id"] for c in latest["changes"]} and not await failures(
                svc, "retention.tiers"
            )

        await jump(svc, clock, later + Backoff().base + timedelta(minutes=1), joined)

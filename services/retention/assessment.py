"""Assessing a client: the health score and its band, the churn-risk rules, and what every
change to a client ends with (``changed``). The formulas are the domain's (domain/health.py,
domain/churn_risk.py); this module gathers their evidence and records what they decide."""

from __future__ import annotations

from datetime import datetime

from services.retention import domain, record
from services.retention.context import Context
from services.retention.store import Client, HealthPoint
from shared import events as ev
from shared.uow import UnitOfWork


async def assess(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> bool:
    """Re-score a client's health; a new band is announced (``client.health_changed``); the
    churn-risk rules are checked too. A prospect has no health yet: it starts when the first
    deposit clears. Returns whether the band changed."""
    if client.became_client_at is None:
        return False
    policy = ctx.settings.health
    events = await record.assessed_events(tx, ctx, client.lead_id, now)
    health = domain.assess_health(domain.health_evidence(client, events, policy, now=now), policy, now=now)
    previous_score, previous_band = client.health_score, client.band
    client.health_score = health.score
    client.band = health.band
    client.health_factors = health.factors_dict()
    client.health_assessed_at = now
    if health.score != previous_score:
        tx.session.add(HealthPoint(lead_id=client.lead_id, at=now, score=health.score))
    await check_churn_risk(tx, ctx, client, now=now)
    if health.band == previous_band:
        return False
    tx.emit(
        "client.health_changed",
        ev.ClientHealthChanged(
            score=health.score,
            band=health.band,
            previous_score=previous_score,
            factors=health.factors_dict(),
        ),
        lead_id=client.lead_id,
    )
    return True


async def check_churn_risk(tx: UnitOfWork, ctx: Context, client: Client, *, now: datetime) -> None:
    """``churn_risk.raised`` once per episode: when a rule first fires for a client with no open
    episode. The episode closes when no rule fires any more; a later rule opens a new one. A
    client who already left (subscription cancelled) is not at risk any more."""
    reasons: list[str] = []
    if client.subscription_status != "cancelled":
        events = await record.assessed_events(tx, ctx, client.lead_id, now)
        policy = ctx.settings.risk
        evidence = domain.risk_evidence(client, events, policy, window=ctx.settings.health.window, now=now)
        reasons = domain.churn_risks(evidence, policy, now=now)
    if not reasons:
        client.churn_risk_open = False
        client.churn_risk_reasons = []
        return
    client.churn_risk_reasons = reasons
    if client.churn_risk_open:
        return
    client.churn_risk_open = True
    client.churn_risk_raised_at = now
    # Counted by rule once committed (RetentionMetrics.count_emitted).
    tx.emit(
        "churn_risk.raised",
        ev.ChurnRiskRaised(reasons=reasons, health_score=client.health_score),
        lead_id=client.lead_id,
    )


async def changed(tx: UnitOfWork, ctx: Context, client: Client) -> None:
    """Every change to a client: stamp it, re-score it, refresh the gauges after the commit."""
    now = tx.now()
    client.updated_at = now
    await assess(tx, ctx, client, now=now)
    ctx.metrics.refresh_after_commit(tx)

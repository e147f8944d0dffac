"""The event contract: one envelope, one typed payload per event type, and the topic of each.

Readers ignore fields they do not know (``extra="ignore"``), so a newer producer never breaks
an older consumer. Producers add fields; they never rename or remove one.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared import topics
from shared.bounds import BoundedInt, Count, Day, Moment, TimeZoneKey
from shared.money import Amount, Bounded, CurrencyCode

FUNNEL_STAGES = (
    "awareness",
    "interest",
    "consideration",
    "decision",
    "action",
    "retention",
    "advocacy",
    "churned",
    "disqualified",
)
Stage = Literal[
    "awareness",
    "interest",
    "consideration",
    "decision",
    "action",
    "retention",
    "advocacy",
    "churned",
    "disqualified",
]
Tier = Literal["best", "good", "tolerable", "fire"]
DealKind = Literal["project", "retainer"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Payload(BaseModel):
    """Base of every event payload: unknown fields are ignored, never an error."""

    model_config = ConfigDict(extra="ignore")


ActorKind = Literal["person", "system", "integration"]
Role = Literal["admin", "sales", "finance", "success", "viewer"]
ROLES: tuple[str, ...] = ("admin", "sales", "finance", "success", "viewer")


class Actor(BaseModel):
    """Who caused an event or made a request: a person (personal or OpenID Connect token), an
    integration (a machine token: a web form, the bootstrap key) or the system itself (a
    consumer or a scheduled job)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: ActorKind = Field(description="person, system or integration", examples=["person"])
    id: str = Field(description="the person's or integration's id; the service's name for the system",
                    examples=["0b7c2f7e-9f5e-4e0b-8a55-0c8f3f7c8d21"])
    role: Role | None = Field(default=None, description="the role the actor acted with (null for the system)")


class Envelope(BaseModel):
    """The one envelope every message on every topic travels in."""

    model_config = ConfigDict(extra="ignore")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="unique id; consumers dedupe on it")
    type: str = Field(description="event type, e.g. deal.won", examples=["deal.won"])
    version: int = Field(default=1, ge=1, description="payload schema version of this type")
    occurred_at: AwareDatetime = Field(description="when it happened, UTC (business clock)")
    producer: str = Field(description="service that wrote it", examples=["leads"])
    lead_id: uuid.UUID | None = Field(
        default=None, description="the person this is about; the Kafka key when present"
    )
    correlation_id: uuid.UUID = Field(
        default_factory=uuid.uuid4, description="shared by every event of one business flow"
    )
    causation_id: uuid.UUID | None = Field(default=None, description="event_id of the cause")
    data: dict[str, Any] = Field(default_factory=dict, description="typed payload, see the type")
    actor: Actor | None = Field(
        default=None, description="who caused it (absent in events of producers older than the field)"
    )

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(timezone.utc)

    @property
    def key(self) -> bytes:
        """Kafka key: the person, so all events about one client stay in order."""
        return str(self.lead_id).encode() if self.lead_id else self.type.encode()

    def payload(self) -> Payload:
        """The typed payload; raises ``KeyError`` for an unknown type, ValidationError if bad."""
        return EVENT_TYPES[self.type].model.model_validate(self.data)


# --------------------------------------------------------------------------- leads topic


class MoneyOut(Payload):
    amount: Bounded
    currency: CurrencyCode


class LeadCaptured(Payload):
    """A person entered the funnel (or a known person touched us again, ``duplicate=True``)."""

    name: str = Field(examples=["Ada Lovelace"])
    email: str | None = Field(examples=["ada@example.com"])
    company: str | None = None
    job_title: str | None = None
    industry: str | None = None
    employees: Count | None = None
    annual_revenue: Amount | None = None
    country: str | None = Field(default=None, description="ISO 3166 alpha-2")
    language: str = Field(default="en", description="ISO 639-1")
    timezone: TimeZoneKey = "UTC"
    channel: str = Field(examples=["website"])
    campaign: str | None = None
    utm: dict[str, str] = Field(default_factory=dict)
    budget: Amount | None = None
    currency: CurrencyCode | None = None
    has_brief: bool = False
    timeline: str | None = None
    needs: list[str] = Field(default_factory=list)
    consent_marketing: bool = False
    legal_basis: str | None = None
    referred_by: uuid.UUID | None = None
    stage: Stage = "awareness"
    fit_score: int = Field(ge=0, le=100)
    red_flags: list[str] = Field(default_factory=list)
    segment: str = Field(default="default", description="nurture segment chosen at intake")
    duplicate: bool = False


class LeadQualified(Payload):
    budget: bool
    authority: bool
    need: bool
    timeline: bool
    notes: str | None = None


class LeadDisqualified(Payload):
    reasons: list[str]


class LeadStageChanged(Payload):
    from_stage: Stage | None
    to_stage: Stage
    cause: str = Field(description="event type or action that moved it", examples=["deposit.cleared"])


class LeadErased(Payload):
    """Every service removes this person's personal data; amounts stay, anonymous."""

    requested_at: AwareDatetime


class ChannelSpendRecorded(Payload):
    channel: str
    period_start: Day
    period_end: Day
    amount: Amount
    currency: CurrencyCode


# --------------------------------------------------------------------------- deals topic


class ScopeLine(Payload):
    description: str
    hours: Bounded | None = None
    amount: Amount


class DealProposed(Payload):
    deal_id: uuid.UUID
    title: str
    kind: DealKind
    currency: CurrencyCode
    lines: list[ScopeLine] = Field(default_factory=list)
    total: Amount
    monthly_fee: Amount | None = None
    included_hours: Bounded | None = None
    hourly_rate: Amount | None = None


class DealWon(DealProposed):
    """A signed estimate. Billing opens the deposit invoice from ``deposit_share``."""

    signed_by: str
    signed_at: Moment
    deposit_share: Bounded = Field(description="share of the first invoice due before work, 0-1")
    red_flags: list[str] = Field(default_factory=list)
    fit_score: int | None = None
    channel: str | None = None
    tier: Tier | None = None


class DealLost(Payload):
    deal_id: uuid.UUID
    reason: str


class DealChangeRequested(Payload):
    deal_id: uuid.UUID
    request_id: uuid.UUID
    description: str
    in_scope: bool
    hours: Bounded | None = None
    amount: Amount = Field(description="price of the change order; 0 when in scope")
    currency: CurrencyCode


# --------------------------------------------------------------------------- engagement topic


class EmailSent(Payload):
    message_id: uuid.UUID
    sequence: str
    step: BoundedInt
    template: str
    subject: str
    category: Literal["marketing", "transactional"] = "marketing"


class EmailOpened(Payload):
    message_id: uuid.UUID


class EmailClicked(Payload):
    message_id: uuid.UUID
    url: str


class EmailBounced(Payload):
    message_id: uuid.UUID | None = None
    hard: bool = True
    reason: str | None = None


class LeadUnsubscribed(Payload):
    channel: str = "email"
    message_id: uuid.UUID | None = None


class LeadSalesReady(Payload):
    engagement_score: int = Field(ge=0, le=100)
    reason: str


class FeedbackReceived(Payload):
    survey: str
    score: int | None = Field(default=None, ge=0, le=10)
    comment: str | None = None
    complaint: bool = Field(default=False, description="a complaint raised by this answer (not by an earlier one it replaces)")
    replaces: bool = Field(default=False, description="the person changed an earlier answer to the same survey")


class TakeoverStarted(Payload):
    by: str
    reason: str | None = None


class TakeoverEnded(Payload):
    by: str | None = None


# --------------------------------------------------------------------------- payments topic


class InvoiceLine(Payload):
    description: str
    quantity: Bounded = Field(default=1)
    amount: Bounded


class InvoiceIssued(Payload):
    invoice_id: uuid.UUID
    number: str = Field(examples=["2026-000042"])
    kind: Literal["deposit", "milestone", "final", "subscription", "change_order", "overage"]
    deal_id: uuid.UUID | None = None
    subscription_id: uuid.UUID | None = None
    amount: Amount
    currency: CurrencyCode
    issued_at: AwareDatetime
    due_at: AwareDatetime
    lines: list[InvoiceLine] = Field(default_factory=list)
    hours_used: Bounded | None = Field(
        default=None, description="hours worked in the billed month (subscription invoices); retention reads usage"
    )
    included_hours: Bounded | None = Field(default=None, description="hours the retainer includes a month")
    period_start: AwareDatetime | None = Field(default=None, description="service period billed (retainers)")
    period_end: AwareDatetime | None = Field(default=None, description="end of the billed period, exclusive")


class PaymentSucceeded(Payload):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Amount
    currency: CurrencyCode
    method: str
    reference: str | None = None
    paid_at: AwareDatetime
    days_late: BoundedInt = Field(default=0, description="days after the due date; 0 when on time")
    invoice_paid: bool = Field(description="the invoice is now fully paid")
    applied: Amount | None = Field(default=None, description="part of `amount` applied to the invoice")
    credited: Amount | None = Field(default=None, description="part of `amount` kept as the client's credit")


class InvoiceVoided(Payload):
    """An issued invoice was cancelled (invoices are never edited; a voided one stops dunning)."""

    invoice_id: uuid.UUID
    number: str
    reason: str
    voided_at: AwareDatetime


class PaymentFailed(Payload):
    invoice_id: uuid.UUID
    amount: Amount
    currency: CurrencyCode
    method: str
    decline_code: str | None = Field(default=None, examples=["expired_card"])
    hard_decline: bool = False
    attempt: BoundedInt = 1
    next_retry_at: AwareDatetime | None = None


class DepositCleared(Payload):
    deal_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Amount
    currency: CurrencyCode
    cleared_at: AwareDatetime


class InvoiceOverdue(Payload):
    invoice_id: uuid.UUID
    amount_due: Amount
    currency: CurrencyCode
    due_at: AwareDatetime
    days_overdue: BoundedInt


class SubscriptionStarted(Payload):
    subscription_id: uuid.UUID
    deal_id: uuid.UUID
    monthly_fee: Amount
    currency: CurrencyCode
    included_hours: Bounded | None = None
    started_at: AwareDatetime


class SubscriptionPaused(Payload):
    subscription_id: uuid.UUID
    paused_fee: Amount
    currency: CurrencyCode
    until: AwareDatetime | None = None


class SubscriptionResumed(Payload):
    subscription_id: uuid.UUID


class SubscriptionCancelled(Payload):
    subscription_id: uuid.UUID
    reason: str | None = None
    effective_at: AwareDatetime
    monthly_fee: Amount | None = None
    currency: CurrencyCode | None = None


class PriceChangeScheduled(Payload):
    subscription_id: uuid.UUID | None = None
    old_price: Amount | None = None
    new_price: Amount | None = None
    percent: Bounded | None = None
    currency: CurrencyCode | None = None
    effective_at: Moment
    notice_dates: list[Moment] = Field(default_factory=list)


class DunningStateChanged(Payload):
    invoice_id: uuid.UUID | None = None
    subscription_id: uuid.UUID | None = None
    from_state: str | None
    to_state: str = Field(examples=["warning"])
    reason: str | None = None


class HoursUsageReported(Payload):
    """A retainer period closed: hours used against those included (under- and overuse are signals)."""

    subscription_id: uuid.UUID
    period_start: AwareDatetime
    period_end: AwareDatetime
    included_hours: Bounded | None = None
    used_hours: Bounded
    overage_hours: Bounded
    overage_amount: Amount
    currency: CurrencyCode
    utilisation: Bounded | None = Field(default=None, description="used / included; under 1 is under-use")


class CreditNoteIssued(Payload):
    """An issued invoice was corrected: the due part lowered, the paid part refunded or credited."""

    credit_note_id: uuid.UUID
    number: str = Field(examples=["CN-2026-000003"])
    invoice_id: uuid.UUID
    amount: Amount
    currency: CurrencyCode
    reduces_due: Amount
    refunded: Amount
    credited: Amount
    reason: str
    issued_at: AwareDatetime


# --------------------------------------------------------------------------- cancellations topic


class SaveOffer(Payload):
    kind: Literal["pause", "discount", "downgrade", "none"]
    fee: Amount | None = None
    discount_percent: Bounded | None = None
    months: BoundedInt | None = None
    currency: CurrencyCode | None = None
    description: str = ""


class CancellationRequested(Payload):
    cancellation_id: uuid.UUID
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    reason: str
    comment: str | None = None
    offer: SaveOffer


class CancellationSaved(Payload):
    cancellation_id: uuid.UUID
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    offer: SaveOffer


class CancellationCompleted(Payload):
    cancellation_id: uuid.UUID
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    reason: str
    effective_at: AwareDatetime


# --------------------------------------------------------------------------- retention topic


class ClientHealthChanged(Payload):
    score: int = Field(ge=0, le=100)
    band: Literal["red", "yellow", "green"]
    previous_score: int | None = None
    factors: dict[str, Any] = Field(default_factory=dict)


class ClientTierChanged(Payload):
    from_tier: Tier | None
    to_tier: Tier
    reasons: list[str] = Field(default_factory=list)


class ChurnRiskRaised(Payload):
    reasons: list[str]
    health_score: int | None = None


class ReferralMade(Payload):
    """The envelope's ``lead_id`` is the referrer; the referred person is in the payload."""

    referral_id: uuid.UUID
    name: str
    email: str
    company: str | None = None
    note: str | None = None


class LoyaltyPointsAwarded(Payload):
    points: BoundedInt
    reason: str
    balance: BoundedInt
    invoice_id: uuid.UUID | None = None


# --------------------------------------------------------------------------- clock topic


class ClockAdvanced(Payload):
    """The simulated business clock moved to ``now`` (only read with CLIENTFLOW_CLOCK=simulated)."""

    now: AwareDatetime


# --------------------------------------------------------------------------- people topic
# Every event carries the whole state of its person or token, keyed by that entity, so the
# compacted topic keeps the last state of each and a follower rebuilds its table from it.


class PersonState(Payload):
    """A person who works in the agency (or an integration's account) as it is now."""

    person_id: uuid.UUID
    email: str = Field(examples=["maria@agency.example"])
    name: str = Field(examples=["Maria Rahman"])
    role: Role
    kind: Literal["person", "integration"] = Field(default="person", description="integration: a machine account")
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes the person speaks", examples=[["en", "bn"]])
    active: bool = True
    revision: int = Field(ge=1, description="grows with every change; a follower keeps the highest")
    changed_at: AwareDatetime


class TokenState(Payload):
    """A personal token as it is now: only its SHA-256 digest travels, never the token."""

    token_id: uuid.UUID
    person_id: uuid.UUID
    token_hash: str = Field(description="hex SHA-256 of the whole token", min_length=64, max_length=64)
    prefix: str = Field(description="the token's public start, to recognise it in lists", examples=["cf_3f9a2c1b"])
    scopes: list[str] = Field(default_factory=list, description="permissions it is narrowed to; empty: the role's")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None
    revision: int = Field(ge=1)


# --------------------------------------------------------------------------- registry


class EventType(BaseModel):
    name: str
    topic: str
    model: type[Payload]


def _t(topic: str, *pairs: tuple[str, type[Payload]]) -> dict[str, EventType]:
    return {name: EventType(name=name, topic=topic, model=model) for name, model in pairs}


EVENT_TYPES: dict[str, EventType] = {
    **_t(
        topics.LEADS,
        ("lead.captured", LeadCaptured),
        ("lead.qualified", LeadQualified),
        ("lead.disqualified", LeadDisqualified),
        ("lead.stage_changed", LeadStageChanged),
        ("lead.erased", LeadErased),
        ("channel.spend_recorded", ChannelSpendRecorded),
    ),
    **_t(
        topics.DEALS,
        ("deal.proposed", DealProposed),
        ("deal.won", DealWon),
        ("deal.lost", DealLost),
        ("deal.change_requested", DealChangeRequested),
    ),
    **_t(
        topics.ENGAGEMENT,
        ("email.sent", EmailSent),
        ("email.opened", EmailOpened),
        ("email.clicked", EmailClicked),
        ("email.bounced", EmailBounced),
        ("lead.unsubscribed", LeadUnsubscribed),
        ("lead.sales_ready", LeadSalesReady),
        ("feedback.received", FeedbackReceived),
        ("takeover.started", TakeoverStarted),
        ("takeover.ended", TakeoverEnded),
    ),
    **_t(
        topics.PAYMENTS,
        ("invoice.issued", InvoiceIssued),
        ("payment.succeeded", PaymentSucceeded),
        ("payment.failed", PaymentFailed),
        ("deposit.cleared", DepositCleared),
        ("invoice.overdue", InvoiceOverdue),
        ("subscription.started", SubscriptionStarted),
        ("subscription.paused", SubscriptionPaused),
        ("subscription.resumed", SubscriptionResumed),
        ("subscription.cancelled", SubscriptionCancelled),
        ("price.change_scheduled", PriceChangeScheduled),
        ("dunning.state_changed", DunningStateChanged),
        ("invoice.voided", InvoiceVoided),
        ("hours.usage_reported", HoursUsageReported),
        ("credit_note.issued", CreditNoteIssued),
    ),
    **_t(
        topics.CANCELLATIONS,
        ("cancellation.requested", CancellationRequested),
        ("cancellation.saved", CancellationSaved),
        ("cancellation.completed", CancellationCompleted),
    ),
    **_t(
        topics.RETENTION,
        ("client.health_changed", ClientHealthChanged),
        ("client.tier_changed", ClientTierChanged),
        ("churn_risk.raised", ChurnRiskRaised),
        ("referral.made", ReferralMade),
        ("loyalty.points_awarded", LoyaltyPointsAwarded),
    ),
    **_t(
        topics.PEOPLE,
        ("person.added", PersonState),
        ("person.updated", PersonState),
        ("person.disabled", PersonState),
        ("token.created", TokenState),
        ("token.revoked", TokenState),
    ),
    **_t(topics.CLOCK, ("clock.advanced", ClockAdvanced)),
}


def topic_of(event_type: str) -> str:
    return EVENT_TYPES[event_type].topic


def types_on(topic: str) -> list[str]:
    return [name for name, et in EVENT_TYPES.items() if et.topic == topic]


def make_event(
    event_type: str,
    payload: Payload,
    *,
    producer: str,
    occurred_at: datetime,
    lead_id: uuid.UUID | None = None,
    cause: Envelope | None = None,
    actor: Actor | None = None,
) -> Envelope:
    """Build an envelope; with ``cause`` the new event joins the cause's correlation chain."""
    expected = EVENT_TYPES[event_type].model
    if not isinstance(payload, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(payload).__name__}")
    return Envelope(
        type=event_type,
        occurred_at=occurred_at,
        producer=producer,
        lead_id=lead_id,
        correlation_id=cause.correlation_id if cause else uuid.uuid4(),
        causation_id=cause.event_id if cause else None,
        data=payload.model_dump(mode="json"),
        actor=actor,
    )

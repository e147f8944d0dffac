"""The event contract: one envelope, one typed payload per event type, and the topic of each.

Readers ignore fields they do not know (``extra="ignore"``), so a newer producer never breaks
an older consumer. Producers add fields; they never rename or remove one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from shared import topics
from shared.bounds import BoundedInt, Count, Day, Moment, TimeZoneKey
from shared.ids import time_ordered_id
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
    return datetime.now(UTC)


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
    id: str = Field(
        description="the person's or integration's id; the service's name for the system",
        examples=["0b7c2f7e-9f5e-4e0b-8a55-0c8f3f7c8d21"],
    )
    role: Role | None = Field(default=None, description="the role the actor acted with (null for the system)")


class Sealed(BaseModel):
    """The personal fields of an event, encrypted with a key that belongs to one person (crypto-
    shredding, docs/design.md "Personal data in the event log"). ``data`` holds placeholders at
    those paths; whoever holds the person's key puts the values back. Once the key is destroyed
    (the person was erased) no copy of the event can be read back, wherever it is kept."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key_id: str = Field(description="id of the person's data key (on the compacted `keys` topic)")
    alg: Literal["A256GCM"] = Field(default="A256GCM", description="AES-256-GCM, authenticated")
    fields: list[str] = Field(description="the paths sealed, e.g. `name`, `lines[].description`")
    ciphertext: str = Field(description="base64url of the 12-byte nonce and the ciphertext with its tag")


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (``shared.ids.time_ordered_id``). Every consumer stores the ids it
    applied in its inbox, and retention keys its history by them: random (version 4) ids sent
    each insert to a random page of a B-tree that grows with history (with a 1,000,000-row inbox
    a batch's commit wrote hundreds of scattered pages), while ids that follow the clock land
    together at the index's newest end."""
    return time_ordered_id()


class Envelope(BaseModel):
    """The one envelope every message on every topic travels in."""

    model_config = ConfigDict(extra="ignore")

    event_id: uuid.UUID = Field(
        default_factory=new_event_id, description="unique id, time-ordered (UUID version 7); consumers dedupe on it"
    )
    type: str = Field(description="event type, e.g. deal.won", examples=["deal.won"])
    version: int = Field(default=1, ge=1, description="payload schema version of this type")
    occurred_at: AwareDatetime = Field(description="when it happened, UTC (business clock)")
    producer: str = Field(description="service that wrote it", examples=["leads"])
    lead_id: uuid.UUID | None = Field(default=None, description="the person this is about; the Kafka key when present")
    correlation_id: uuid.UUID = Field(
        default_factory=uuid.uuid4, description="shared by every event of one business flow"
    )
    causation_id: uuid.UUID | None = Field(default=None, description="event_id of the cause")
    data: dict[str, Any] = Field(default_factory=dict, description="typed payload, see the type")
    actor: Actor | None = Field(
        default=None, description="who caused it (absent in events of producers older than the field)"
    )
    sealed: Sealed | None = Field(
        default=None, description="the personal fields, encrypted with the person's key (absent: none in clear)"
    )
    # Set by the reader that opened the envelope: the person's key was destroyed (or is lost),
    # so the personal fields hold ``ERASED`` placeholders and the person is to be treated as erased.
    _shredded: bool = PrivateAttr(default=False)

    @property
    def shredded(self) -> bool:
        """The person's key is gone: the personal fields are placeholders (the person was erased)."""
        return self._shredded

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def key(self) -> bytes:
        """Kafka key: the person, so all events about one client stay in order."""
        return str(self.lead_id).encode() if self.lead_id else self.type.encode()

    def payload(self) -> Payload:
        """The typed payload; raises ``KeyError`` for an unknown type, ValidationError if bad."""
        return EVENT_TYPES[self.type].model.model_validate(self.data)


# --------------------------------------------------------------------------- leads topic


class MoneyOut(Payload):
    """An amount of money with its currency."""

    amount: Bounded = Field(description="the amount")
    currency: CurrencyCode = Field(description="ISO 4217 code of the amount")


class LeadCaptured(Payload):
    """A person entered the funnel (or a known person touched us again, ``duplicate=True``)."""

    name: str = Field(examples=["Ada Lovelace"], description="the person's name")
    email: str | None = Field(examples=["ada@example.com"], description="the person's e-mail address, if given")
    company: str | None = Field(default=None, description="the company the person works for")
    job_title: str | None = Field(
        default=None, description="the person's job title (a decision maker or not counts for fit)"
    )
    industry: str | None = Field(default=None, description="the company's industry")
    employees: Count | None = Field(default=None, description="the company's number of employees")
    annual_revenue: Amount | None = Field(default=None, description="the company's yearly revenue, in `currency`")
    country: str | None = Field(default=None, description="ISO 3166 alpha-2")
    language: str = Field(default="en", description="ISO 639-1")
    timezone: TimeZoneKey = Field(
        default="UTC", description="IANA time zone of the person (quiet hours, business hours)"
    )
    channel: str = Field(examples=["website"], description="acquisition channel the lead came from")
    campaign: str | None = Field(default=None, description="marketing campaign of the first touch")
    utm: dict[str, str] = Field(default_factory=dict, description="UTM parameters of the first touch")
    budget: Amount | None = Field(
        default=None, description="budget the person named, in `currency`; null when none was given (a red flag)"
    )
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 code of `budget` and `annual_revenue`")
    has_brief: bool = Field(default=False, description="a written brief came with the lead (its text stays in leads)")
    timeline: str | None = Field(default=None, description="when the person wants it done, in their words")
    needs: list[str] = Field(default_factory=list, description="what the person needs, as they said it")
    consent_marketing: bool = Field(default=False, description="the person consented to marketing e-mail")
    legal_basis: str | None = Field(default=None, description="the legal basis for processing the person's data")
    referred_by: uuid.UUID | None = Field(default=None, description="lead_id of the client who referred the person")
    stage: Stage = Field(default="awareness", description="funnel stage of the lead after this capture")
    fit_score: int = Field(ge=0, le=100, description="ideal-client-profile fit, 0-100")
    red_flags: list[str] = Field(default_factory=list, description="names of the red flags seen at intake")
    segment: str = Field(default="default", description="nurture segment chosen at intake")
    duplicate: bool = Field(
        default=False, description="a known person touched us again; `lead_id` is the existing lead"
    )
    owner_id: uuid.UUID | None = Field(default=None, description="the person the lead was assigned to, if anyone")
    first_touch_due_at: AwareDatetime | None = Field(
        default=None, description="when the owner must have reached the lead"
    )
    account_id: uuid.UUID | None = Field(
        default=None,
        description="the company account the person belongs to (same work domain and company name); null: none",
    )
    account_name: str | None = Field(default=None, description="the company account's name, if any")
    consent_wording: str | None = Field(
        default=None, max_length=40, description="the version of the consent wording the person saw, if given"
    )
    capture_source: str | None = Field(
        default=None, max_length=40, description="how the lead came in: form, import or referral (consent's source)"
    )


class LeadQualified(Payload):
    """Sales checked the lead against BANT (budget, authority, need, timeline); the lead qualified."""

    budget: bool = Field(description="the person has the budget")
    authority: bool = Field(description="the person can decide")
    need: bool = Field(description="the person needs what we do")
    timeline: bool = Field(description="the timeline suits us")
    notes: str | None = Field(default=None, description="sales' notes on the qualification")
    owner_id: uuid.UUID | None = Field(default=None, description="the lead's owner then (null: the pool)")


class LeadDisqualified(Payload):
    """The lead will not become a client (BANT failed, or sales ruled it out); its stage is `disqualified`."""

    reasons: list[str] = Field(description="why the lead was ruled out")
    owner_id: uuid.UUID | None = Field(default=None, description="the lead's owner then (null: the pool)")


class LeadStageChanged(Payload):
    """The lead moved from one funnel stage to another (forwards or backwards)."""

    from_stage: Stage | None = Field(description="the stage before; null for a lead that had none")
    to_stage: Stage = Field(description="the stage now")
    cause: str = Field(description="event type or action that moved it", examples=["deposit.cleared"])
    owner_id: uuid.UUID | None = Field(default=None, description="the lead's owner then (null: the pool)")


class LeadErased(Payload):
    """Every service removes this person's personal data; amounts stay, anonymous."""

    requested_at: AwareDatetime = Field(description="when erasure was asked for")


class ChannelSpendRecorded(Payload):
    """What an acquisition channel cost in a period (a repeat for the same period corrects it); CAC reads it."""

    channel: str = Field(description="the acquisition channel")
    period_start: Day = Field(description="first day of the period, inclusive")
    period_end: Day = Field(description="last day of the period, inclusive")
    amount: Amount = Field(description="what the channel cost in the period")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")


# --------------------------------------------------------------------------- deals topic


class ScopeLine(Payload):
    """One line of an estimate's scope."""

    description: str = Field(description="what is delivered")
    hours: Bounded | None = Field(default=None, description="hours estimated for it")
    amount: Amount = Field(description="price of the line")


class DealProposed(Payload):
    """An estimate was written for the lead: a project (scope lines) or a retainer (monthly fee, included hours)."""

    deal_id: uuid.UUID = Field(description="the deal (estimate) id")
    title: str = Field(description="the estimate's title")
    kind: DealKind = Field(description="project (scope lines, one price) or retainer (a monthly fee)")
    currency: CurrencyCode = Field(description="ISO 4217 code of every amount of the deal")
    lines: list[ScopeLine] = Field(default_factory=list, description="scope lines of the estimate")
    total: Amount = Field(
        description="the estimate's total: the sum of its lines (a retainer: its monthly fee plus any lines)"
    )
    monthly_fee: Amount | None = Field(default=None, description="a retainer's monthly fee")
    included_hours: Bounded | None = Field(default=None, description="hours a retainer includes each month")
    hourly_rate: Amount | None = Field(
        default=None, description="price of an hour beyond the scope (overage, change orders)"
    )
    owner_id: uuid.UUID | None = Field(default=None, description="the rep who proposed it (the lead's owner)")
    submission_deadline: Moment | None = Field(default=None, description="a tender's deadline for the proposal")
    version: Count | None = Field(default=None, description="the estimate's version: 1 at first, one more per revision")
    digest: str | None = Field(
        default=None, max_length=64, description="SHA-256 (hex) of the version's content as canonical JSON"
    )
    valid_until: Moment | None = Field(default=None, description="until when the client may accept this version")
    acceptance_url: str | None = Field(
        default=None, max_length=2000, description="the signed public link where the client reads and accepts it"
    )


class DealRevised(DealProposed):
    """A proposed estimate was revised: the deal keeps its id, this is its new content and version
    (earlier versions are kept; their links no longer accept)."""

    version: Count = Field(description="the new version (2 for the first revision)")
    digest: str = Field(max_length=64, description="SHA-256 (hex) of the new version's content as canonical JSON")
    valid_until: Moment = Field(description="until when the client may accept this version")


class DealWon(DealProposed):
    """A signed estimate. Billing opens the deposit invoice from ``deposit_share``."""

    signed_by: str = Field(description="who signed the estimate")
    signed_at: Moment = Field(description="when the estimate was signed")
    deposit_share: Bounded = Field(description="share of the first invoice due before work, 0-1")
    red_flags: list[str] = Field(default_factory=list, description="names of the lead's red flags when it was signed")
    fit_score: int | None = Field(default=None, description="the lead's fit score when it was signed, 0-100")
    channel: str | None = Field(default=None, description="acquisition channel of the lead")
    tier: Tier | None = Field(default=None, description="the client's tier when it was signed, if it has one")
    signed_via: Literal["link", "staff"] | None = Field(
        default=None, description="link: the client accepted through the acceptance link; staff: a person recorded it"
    )
    signed_ip: str | None = Field(
        default=None, max_length=64, description="the address the client accepted from (link only)"
    )


class DealLost(Payload):
    """The estimate was turned down or dropped."""

    deal_id: uuid.UUID = Field(description="the deal (estimate) id")
    reason: str = Field(description="why it was lost")


class DealChangeRequested(Payload):
    """The client asked for a change on a won deal: in scope (free) or out of scope (a priced change order)."""

    deal_id: uuid.UUID = Field(description="the won deal the change is asked on")
    request_id: uuid.UUID = Field(description="the change request id (billing's change order has the same id)")
    description: str = Field(description="what the client asked for")
    in_scope: bool = Field(description="covered by the estimate's lines (free) or not (a paid change order)")
    hours: Bounded | None = Field(default=None, description="hours the change takes")
    amount: Amount = Field(description="price of the change order; 0 when in scope")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")


# --------------------------------------------------------------------------- engagement topic


class EmailSent(Payload):
    """Nurture sent one e-mail of a sequence step."""

    message_id: uuid.UUID = Field(description="the e-mail's id (also its Message-ID)")
    sequence: str = Field(description="the sequence it belongs to")
    step: BoundedInt = Field(description="the step of the sequence, from 1")
    template: str = Field(description="the template it was rendered from")
    subject: str = Field(description="the subject line")
    category: Literal["marketing", "transactional"] = Field(
        default="marketing", description="marketing (needs consent) or transactional"
    )


class EmailOpened(Payload):
    """The first open of an e-mail (its tracking pixel was loaded)."""

    message_id: uuid.UUID = Field(description="the e-mail opened")


class EmailClicked(Payload):
    """A tracked link in an e-mail was followed."""

    message_id: uuid.UUID = Field(description="the e-mail whose link was followed")
    url: str = Field(description="the link followed")


class EmailBounced(Payload):
    """An e-mail could not be delivered (the mail provider's bounce, or a refusal while sending)."""

    message_id: uuid.UUID | None = Field(default=None, description="the e-mail that bounced, when known")
    hard: bool = Field(default=True, description="a permanent failure: nothing more is sent to the address")
    reason: str | None = Field(default=None, description="the provider's or server's reason")


class LeadUnsubscribed(Payload):
    """The person withdrew consent to marketing on a channel; transactional mail goes on."""

    channel: str = Field(default="email", description="the channel unsubscribed from")
    message_id: uuid.UUID | None = Field(default=None, description="the e-mail whose unsubscribe link was used, if any")


class LeadSalesReady(Payload):
    """The person's engagement reached the sales-ready threshold (published once per person)."""

    engagement_score: int = Field(ge=0, le=100, description="the engagement score that crossed the threshold, 0-100")
    reason: str = Field(description="what made the person sales-ready")


class FeedbackReceived(Payload):
    """The person answered a one-question survey (or sent feedback by hand)."""

    survey: str = Field(description="the survey answered")
    score: int | None = Field(
        default=None, ge=0, le=10, description="the answer on a 0-10 scale, if the survey asks for one"
    )
    comment: str | None = Field(default=None, description="the person's comment")
    complaint: bool = Field(
        default=False, description="a complaint raised by this answer (not by an earlier one it replaces)"
    )
    replaces: bool = Field(default=False, description="the person changed an earlier answer to the same survey")


class TakeoverStarted(Payload):
    """A human took over the relationship: automated messages to the person pause, in every service."""

    by: str = Field(description="who took over (a person, or `inbound-reply`)")
    reason: str | None = Field(default=None, description="why")


class TakeoverEnded(Payload):
    """The human takeover ended: automated messages may resume."""

    by: str | None = Field(default=None, description="who released it")


# --------------------------------------------------------------------------- payments topic


class InvoiceLine(Payload):
    """One line of an invoice."""

    description: str = Field(description="what is billed")
    quantity: Bounded = Field(default=Decimal(1), description="how many (hours, months, units)")
    amount: Bounded = Field(description="price of the line (negative for a deduction, as a deposit already paid)")


class InvoiceIssued(Payload):
    """An invoice was issued (it never changes afterwards: corrections are credit notes or a void)."""

    invoice_id: uuid.UUID = Field(description="the invoice id")
    number: str = Field(examples=["2026-000042"], description="the invoice number, gapless per year")
    kind: Literal["deposit", "milestone", "final", "subscription", "change_order", "overage"] = Field(
        description="what the invoice bills"
    )
    deal_id: uuid.UUID | None = Field(default=None, description="the deal it bills, if any")
    subscription_id: uuid.UUID | None = Field(default=None, description="the subscription it bills, if any")
    amount: Amount = Field(description="total due")
    currency: CurrencyCode = Field(description="ISO 4217 code of every amount of the invoice")
    issued_at: AwareDatetime = Field(description="when it was issued")
    due_at: AwareDatetime = Field(description="when it is due")
    lines: list[InvoiceLine] = Field(default_factory=list, description="the invoice's lines")
    hours_used: Bounded | None = Field(
        default=None, description="hours worked in the billed month (subscription invoices); retention reads usage"
    )
    included_hours: Bounded | None = Field(default=None, description="hours the retainer includes a month")
    period_start: AwareDatetime | None = Field(default=None, description="service period billed (retainers)")
    period_end: AwareDatetime | None = Field(default=None, description="end of the billed period, exclusive")


class PaymentSucceeded(Payload):
    """Money arrived for an invoice (manual, by webhook or a card retry); partial payments add up."""

    payment_id: uuid.UUID = Field(description="the payment id")
    invoice_id: uuid.UUID = Field(description="the invoice paid")
    amount: Amount = Field(description="the amount received")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")
    method: str = Field(description="how it was paid (card, bank_transfer, credit_balance...)")
    reference: str | None = Field(default=None, description="the provider's or bank's reference")
    paid_at: AwareDatetime = Field(description="when the money arrived")
    days_late: BoundedInt = Field(default=0, description="days after the due date; 0 when on time")
    invoice_paid: bool = Field(description="the invoice is now fully paid")
    applied: Amount | None = Field(default=None, description="part of `amount` applied to the invoice")
    credited: Amount | None = Field(default=None, description="part of `amount` kept as the client's credit")
    invoice_kind: str | None = Field(
        default=None, description="the invoice's kind (deposit, project, retainer...): a deposit counts once cleared"
    )


class InvoiceVoided(Payload):
    """An issued invoice was cancelled (invoices are never edited; a voided one stops dunning)."""

    invoice_id: uuid.UUID = Field(description="the invoice voided")
    number: str = Field(description="its number")
    reason: str = Field(description="why it was voided")
    voided_at: AwareDatetime = Field(description="when")


class PaymentFailed(Payload):
    """A card payment failed; dunning retries soft declines and never hard ones."""

    invoice_id: uuid.UUID = Field(description="the invoice the charge was for")
    amount: Amount = Field(description="the amount charged")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")
    method: str = Field(description="how the charge was tried (card)")
    decline_code: str | None = Field(
        default=None, examples=["expired_card"], description="the card network's decline code"
    )
    hard_decline: bool = Field(
        default=False, description="a decline that is never retried (stolen, lost, fraudulent card...)"
    )
    attempt: BoundedInt = Field(default=1, description="which attempt failed, from 1")
    next_retry_at: AwareDatetime | None = Field(
        default=None, description="when the charge is tried again; null when it is not"
    )


class DepositCleared(Payload):
    """The deposit of a deal is paid in full: work may start."""

    deal_id: uuid.UUID = Field(description="the deal whose work may now start")
    invoice_id: uuid.UUID = Field(description="the deposit invoice")
    amount: Amount = Field(description="the deposit paid")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")
    cleared_at: AwareDatetime = Field(description="when the deposit was paid in full")


class InvoiceOverdue(Payload):
    """An invoice passed its due date unpaid (published once per invoice)."""

    invoice_id: uuid.UUID = Field(description="the overdue invoice")
    amount_due: Amount = Field(description="what is still due")
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount_due`")
    due_at: AwareDatetime = Field(description="when it was due")
    days_overdue: BoundedInt = Field(description="days since the due date")


class SubscriptionStarted(Payload):
    """A retainer's subscription started (when its deposit cleared)."""

    subscription_id: uuid.UUID = Field(description="the subscription id")
    deal_id: uuid.UUID = Field(description="the retainer deal it bills")
    monthly_fee: Amount = Field(description="the fee billed each period")
    currency: CurrencyCode = Field(description="ISO 4217 code of the fee")
    included_hours: Bounded | None = Field(default=None, description="hours included each month")
    started_at: AwareDatetime = Field(description="when it started")


class SubscriptionPaused(Payload):
    """A subscription was paused at a low fee (a save offer accepted); paused is not churn and not MRR."""

    subscription_id: uuid.UUID = Field(description="the subscription paused")
    paused_fee: Amount = Field(description="the low fee billed while paused")
    currency: CurrencyCode = Field(description="ISO 4217 code of the fee")
    until: AwareDatetime | None = Field(default=None, description="when the pause ends by itself; null: until resumed")


class SubscriptionResumed(Payload):
    """A paused subscription runs again at its full fee."""

    subscription_id: uuid.UUID = Field(description="the subscription resumed")


class SubscriptionCancelled(Payload):
    """A subscription ended (the client cancelled, or dunning ended it for non-payment)."""

    subscription_id: uuid.UUID = Field(description="the subscription ended")
    reason: str | None = Field(default=None, description="why (the client's reason, or non_payment)")
    effective_at: AwareDatetime = Field(description="when it ends")
    monthly_fee: Amount | None = Field(default=None, description="the fee it had (the MRR lost)")
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 code of the fee")


class SubscriptionPriceChanged(Payload):
    """A save offer that bills changed a subscription's fee for the periods from `effective_at`
    (a discount or a downgrade, until `until`), or the offer ended and the fee returned."""

    subscription_id: uuid.UUID = Field(description="the subscription whose fee changes")
    reason: Literal["discount", "downgrade", "offer_ended"] = Field(
        description="discount or downgrade (a save offer taken), offer_ended (the full fee returns)"
    )
    old_fee: Amount = Field(description="the monthly fee billed before")
    new_fee: Amount = Field(description="the monthly fee billed from `effective_at`")
    currency: CurrencyCode = Field(description="ISO 4217 code of the fees")
    discount_percent: Bounded | None = Field(default=None, description="the discount, for a discount")
    included_hours: Bounded | None = Field(default=None, description="hours included a month from `effective_at`")
    effective_at: Moment = Field(description="the first period billed at `new_fee` starts here")
    until: Moment | None = Field(default=None, description="when the offer ends and the full fee returns")


class PriceChangeScheduled(Payload):
    """A price change was announced for a subscription, with the dates its notices go out."""

    subscription_id: uuid.UUID | None = Field(default=None, description="the subscription whose price changes")
    old_price: Amount | None = Field(default=None, description="the fee before")
    new_price: Amount | None = Field(default=None, description="the fee from `effective_at`")
    percent: Bounded | None = Field(default=None, description="the change in percent")
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 code of the prices")
    effective_at: Moment = Field(description="periods starting at or after this moment are billed at the new price")
    notice_dates: list[Moment] = Field(
        default_factory=list, description="when the client is told (30 and 7 days before, those still ahead)"
    )


class DunningStateChanged(Payload):
    """A late or failed payment moved along the dunning ladder (or out of it, `clear`)."""

    invoice_id: uuid.UUID | None = Field(default=None, description="the invoice in dunning")
    subscription_id: uuid.UUID | None = Field(default=None, description="the subscription it concerns, if any")
    from_state: str | None = Field(description="the state before; null when dunning starts")
    to_state: str = Field(
        examples=["warning"],
        description="the state now: retrying, grace, overdue, warning, blocked, cancelled or clear",
    )
    reason: str | None = Field(default=None, description="why it moved")


class HoursUsageReported(Payload):
    """A retainer period closed: hours used against those included (under- and overuse are signals)."""

    subscription_id: uuid.UUID = Field(description="the retainer's subscription")
    period_start: AwareDatetime = Field(description="start of the period closed")
    period_end: AwareDatetime = Field(description="end of the period closed, exclusive")
    included_hours: Bounded | None = Field(default=None, description="hours the retainer includes a month")
    used_hours: Bounded = Field(description="hours worked in the period")
    overage_hours: Bounded = Field(description="hours beyond the included ones")
    overage_amount: Amount = Field(description="price of the overage (billed on the next invoice)")
    currency: CurrencyCode = Field(description="ISO 4217 code of `overage_amount`")
    utilisation: Bounded | None = Field(default=None, description="used / included; under 1 is under-use")


class CreditNoteIssued(Payload):
    """An issued invoice was corrected: the due part lowered, the paid part refunded or credited."""

    credit_note_id: uuid.UUID = Field(description="the credit note id")
    number: str = Field(examples=["CN-2026-000003"], description="the credit note number, its own gapless sequence")
    invoice_id: uuid.UUID = Field(description="the invoice it corrects")
    amount: Amount = Field(description="the credit note's total")
    currency: CurrencyCode = Field(description="ISO 4217 code of every amount")
    reduces_due: Amount = Field(description="part that lowers what is still due on the invoice")
    refunded: Amount = Field(description="part of what was paid that is refunded")
    credited: Amount = Field(description="part of what was paid kept as the client's credit")
    reason: str = Field(description="why the invoice was corrected")
    issued_at: AwareDatetime = Field(description="when it was issued")


class DealWrittenOff(Payload):
    """A won project was ended as a loss: its open milestones voided, partly paid invoices
    credited, and what it was worth beyond what was paid written off."""

    deal_id: uuid.UUID = Field(description="the won project written off")
    amount: Amount = Field(
        examples=["900.00"], description="what the deal was worth minus what was paid: the amount written off"
    )
    currency: CurrencyCode = Field(description="ISO 4217 code of `amount`")
    reason: str = Field(examples=["project from hell"], description="why the project was written off")
    channel: str | None = Field(default=None, description="acquisition channel of the deal's lead, from deal.won")
    voided_invoice_ids: list[uuid.UUID] = Field(default_factory=list, description="the open invoices voided")
    credit_note_ids: list[uuid.UUID] = Field(
        default_factory=list, description="credit notes that cancel what was still due on partly paid invoices"
    )
    written_off_at: AwareDatetime = Field(description="when")


# --------------------------------------------------------------------------- cancellations topic


class SaveOffer(Payload):
    """What retention offered a client who asked to cancel."""

    kind: Literal["pause", "discount", "downgrade", "none"] = Field(
        description="pause (a low fee for some months), discount, downgrade, or none (the client is let go)"
    )
    fee: Amount | None = Field(default=None, description="the monthly fee during the offer")
    discount_percent: Bounded | None = Field(default=None, description="the discount, for a discount offer")
    months: BoundedInt | None = Field(default=None, description="how many months the offer lasts")
    currency: CurrencyCode | None = Field(default=None, description="ISO 4217 code of `fee`")
    description: str = Field(default="", description="the offer in words, as shown to the client")
    included_hours: Bounded | None = Field(
        default=None, description="hours included a month during a downgrade (the smaller plan)"
    )


class CancellationRequested(Payload):
    """A client asked to cancel; a save offer is made first."""

    cancellation_id: uuid.UUID = Field(description="the cancellation id")
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    reason: str = Field(description="the client's reason")
    comment: str | None = Field(default=None, description="the client's words")
    offer: SaveOffer = Field(description="the save offer made")


class CancellationSaved(Payload):
    """The client accepted the save offer instead of leaving (a pause or a discount)."""

    cancellation_id: uuid.UUID = Field(description="the cancellation id")
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    offer: SaveOffer = Field(description="the offer accepted")


class CancellationCompleted(Payload):
    """The client confirmed the cancellation; billing ends the subscription, leads marks the stage `churned`."""

    cancellation_id: uuid.UUID = Field(description="the cancellation id")
    subscription_id: uuid.UUID | None = Field(
        default=None, description="the subscription to pause, discount or end; none: all of the client's"
    )
    reason: str = Field(description="the client's reason")
    effective_at: AwareDatetime = Field(description="when the cancellation takes effect")


TerminationReason = Literal["fired", "non_payment", "scope_abuse", "mistreats_staff", "other"]
TERMINATION_REASONS: tuple[str, ...] = ("fired", "non_payment", "scope_abuse", "mistreats_staff", "other")


class ClientTerminated(Payload):
    """The agency ended the relationship (not the client): billing ends every running
    subscription at ``effective_at`` (reason ``terminated:<reason>``) and issues a final
    invoice, nurture sends the offboarding notice, leads marks the person and their company
    so a later lead from them is flagged ``terminated_before`` and quoted with a surcharge."""

    termination_id: uuid.UUID = Field(description="the termination id")
    reason: TerminationReason = Field(description="why the agency ends it", examples=["fired"])
    comment: str | None = Field(default=None, max_length=2000, description="free text (may name people)")
    notice_days: BoundedInt = Field(ge=0, le=365, description="days of notice given", examples=[30])
    effective_at: AwareDatetime = Field(description="when the relationship ends (now + notice_days)")
    subscription_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=100, description="the client's running subscriptions it ends"
    )


# --------------------------------------------------------------------------- retention topic


class ClientHealthChanged(Payload):
    """A client's health score moved into another band."""

    score: int = Field(ge=0, le=100, description="health score now, 0-100")
    band: Literal["red", "yellow", "green"] = Field(description="red (0-50), yellow (51-75) or green (76-100)")
    previous_score: int | None = Field(default=None, description="the score before, if any")
    factors: dict[str, Any] = Field(default_factory=dict, description="each factor's value and weight behind the score")


class ClientTierChanged(Payload):
    """A tier review put the client in another tier."""

    from_tier: Tier | None = Field(description="the tier before; null for a new client")
    to_tier: Tier = Field(description="the tier now")
    reasons: list[str] = Field(default_factory=list, description="why the client is in this tier")
    computed_tier: Tier | None = Field(
        default=None, description="what the tier rules give; differs from `to_tier` while a manual tier is in force"
    )
    manual: bool | None = Field(default=None, description="`to_tier` was set by hand (PUT /clients/{lead_id}/tier)")


class ClientTierSetManually(Payload):
    """An admin set a client's tier by hand (it wins over the computed tier until `until`), or
    removed it (`tier` null). The record of it, so a replay rebuilds the manual tier."""

    tier: Tier | None = Field(description="the tier set by hand; null when the manual tier was removed")
    reason: str | None = Field(default=None, max_length=1000, description="why (required when set)")
    until: Day | None = Field(default=None, description="the manual tier holds until this day (exclusive)")
    set_by: str | None = Field(default=None, max_length=200, description="who set or removed it (the actor's id)")


class ChurnRiskRaised(Payload):
    """A client shows signs of leaving (once per episode); nurture raises a check-in task."""

    reasons: list[str] = Field(
        description="the rules that fired (late_payments, engagement_drop, complaints, hours_underused, price_increase_ahead)"
    )
    health_score: int | None = Field(default=None, description="the client's health score, 0-100")


class ReferralMade(Payload):
    """The envelope's ``lead_id`` is the referrer; the referred person is in the payload."""

    referral_id: uuid.UUID = Field(description="the referral id")
    name: str = Field(description="the referred person's name")
    email: str = Field(description="the referred person's e-mail address")
    company: str | None = Field(default=None, description="the referred person's company")
    note: str | None = Field(default=None, description="the referrer's note")


class LoyaltyPointsAwarded(Payload):
    """The client earned loyalty points (an invoice paid and past its refund window, a converted referral)."""

    points: BoundedInt = Field(description="points earned now")
    reason: str = Field(description="why (invoice paid, referral converted)")
    balance: BoundedInt = Field(description="the client's balance after this award")
    invoice_id: uuid.UUID | None = Field(default=None, description="the invoice that earned them, if any")


class LeadAssigned(Payload):
    """The lead (``role`` lead) or, once won, the client (``role`` account) has a new owner, or
    none (``owner_id`` null: back in the pool). A new lead's first owner travels in
    ``lead.captured`` (``owner_id``), not here."""

    owner_id: uuid.UUID | None = Field(description="the new owner, or null")
    previous_owner_id: uuid.UUID | None = Field(default=None, description="who owned it before")
    role: Literal["lead", "account"] = Field(
        default="lead", description="lead: sales; account: the client's success owner"
    )
    reason: str = Field(description="why: a rule, round-robin, by hand, a disabled owner, a won deal")
    first_touch_due_at: AwareDatetime | None = Field(
        default=None, description="when the owner must have reached the lead"
    )


class LeadActivityLogged(Payload):
    """A person logged a call, meeting, e-mail or note on the lead."""

    activity_id: uuid.UUID = Field(description="the activity id")
    kind: Literal["call", "meeting", "email", "note"] = Field(description="call, meeting, e-mail or note")
    outcome: str | None = Field(default=None, description="what came of it")
    by_id: uuid.UUID | None = Field(default=None, description="the person who logged it")
    first_touch: bool = Field(default=False, description="the first time anyone reached the lead")


TaskKind = Literal[
    "first_touch_overdue",
    "next_step",
    "tender_deadline",
    "handoff",
    "reply",
    "complaint",
    "churn_risk",
    "dunning_blocked",
    "let_go_review",
    "deposit_unpaid",
    "other",
]


class TaskRaised(Payload):
    """Work for a person, raised by whichever service saw the need; nurture keeps every task
    (``GET /tasks``). ``source`` makes it once: a task raised again with the same source is the same task."""

    task_id: uuid.UUID = Field(description="the task id")
    kind: TaskKind = Field(description="what sort of work it is")
    title: str = Field(max_length=300, description="the task in a line")
    detail: str | None = Field(default=None, description="more about it")
    owner_id: uuid.UUID | None = Field(default=None, description="who must do it; null: the lead's owner or an admin")
    due_at: AwareDatetime = Field(description="when it must be done (business clock)")
    source: str = Field(max_length=200, description="what raised it, unique per task")


class TaskClosed(Payload):
    """The need behind a task went away (the lead was reached, the deadline passed)."""

    task_id: uuid.UUID = Field(description="the task closed")
    reason: str = Field(description="why it closed")


# --------------------------------------------------------------------------- clock topic


class ClockAdvanced(Payload):
    """The simulated business clock moved to ``now`` (only read with CLIENTFLOW_CLOCK=simulated)."""

    now: AwareDatetime = Field(description="the business time from now on")


# --------------------------------------------------------------------------- keys topic
# Every person's data key, wrapped with the master key, keyed by key id on a compacted topic
# that each service folds into its own ``person_keys`` table. ``person_key.destroyed`` is the
# last record of an erased person's key: compaction drops the wrapped key before it.


class PersonKeyCreated(Payload):
    """A new data key for one person (``subject_id``: the lead, or a referral before it is one)."""

    key_id: str = Field(max_length=64, description="the key's id, carried by every event it seals")
    subject_id: uuid.UUID = Field(description="whose key it is (the lead id, or a referral's id)")
    kek_id: str = Field(max_length=64, description="which master key wraps it (CLIENTFLOW_MASTER_KEYS)")
    wrapped: str = Field(max_length=200, description="base64url of the nonce and the key encrypted with the master key")
    created_at: AwareDatetime = Field(description="when the key was made")


class PersonKeyDestroyed(Payload):
    """The person's key is gone for good: every event sealed with it is unreadable from now on."""

    key_id: str = Field(max_length=64, description="the key destroyed")
    subject_id: uuid.UUID = Field(description="whose key it was")
    destroyed_at: AwareDatetime = Field(description="when")
    reason: str = Field(default="erasure", max_length=100, description="erasure, or the data-retention job")


# --------------------------------------------------------------------------- people topic
# Every event carries the whole state of its person or token, keyed by that entity, so the
# compacted topic keeps the last state of each and a follower rebuilds its table from it.


class PersonState(Payload):
    """A person who works in the agency (or an integration's account) as it is now."""

    person_id: uuid.UUID = Field(description="the person's id")
    email: str = Field(examples=["maria@agency.example"], description="the person's e-mail address (their login name)")
    name: str = Field(examples=["Maria Rahman"], description="the person's name")
    role: Role = Field(description="the person's role")
    kind: Literal["person", "integration"] = Field(default="person", description="integration: a machine account")
    languages: list[str] = Field(
        default_factory=list, description="ISO 639-1 codes the person speaks", examples=[["en", "bn"]]
    )
    active: bool = Field(default=True, description="false once disabled: every token of the person is refused")
    revision: int = Field(ge=1, description="grows with every change; a follower keeps the highest")
    changed_at: AwareDatetime = Field(description="when this state was written")


class TokenState(Payload):
    """A personal token as it is now: only its SHA-256 digest travels, never the token."""

    token_id: uuid.UUID = Field(description="the token id")
    person_id: uuid.UUID = Field(description="the person the token belongs to")
    token_hash: str = Field(description="hex SHA-256 of the whole token", min_length=64, max_length=64)
    prefix: str = Field(description="the token's public start, to recognise it in lists", examples=["cf_3f9a2c1b"])
    scopes: list[str] = Field(default_factory=list, description="permissions it is narrowed to; empty: the role's")
    created_at: AwareDatetime = Field(description="when it was created")
    expires_at: AwareDatetime | None = Field(default=None, description="when it stops working; null: never")
    revoked_at: AwareDatetime | None = Field(default=None, description="when it was revoked; null: it was not")
    revision: int = Field(ge=1, description="grows with every change; a follower keeps the highest")


class ExchangeRateSet(Payload):
    """An exchange rate set as data: what one unit of `currency` is worth in `quote` from
    `valid_from` on (the economics convert with it)."""

    currency: CurrencyCode = Field(description="ISO 4217 code of the currency converted")
    quote: CurrencyCode = Field(description="ISO 4217 code it is converted into")
    valid_from: Moment = Field(description="the rate holds from this moment until the pair's next rate")
    rate: Bounded = Field(examples=["0.92"], description="units of `quote` for one unit of `currency`")


class ClientHoursUnderused(Payload):
    """A retainer client used under the underuse share of their included hours two months
    running: they get a nudge and their account owner a task (included hours keep clients longer
    only when they are used)."""

    months: BoundedInt = Field(description="months running under the share")
    used_hours: Bounded = Field(description="hours used in the last month reported")
    included_hours: Bounded = Field(description="hours included a month")
    share: Bounded = Field(examples=["0.5"], description="the underuse share (RETENTION_RISK_UNDERUSED_SHARE)")


# --------------------------------------------------------------------------- exports topic
# A person's data gathered on request (right of access and portability, issue 21 part 3):
# leads asks with ``export.requested``; nurture, billing and retention each answer with their
# part in one or more ``export.part`` chunks (each well under a Kafka message's 1 MB).


class ExportRequested(Payload):
    """An admin asked for everything the services hold about the person (``POST
    /leads/{lead_id}/export``): every service answers with its part (``export.part``)."""

    export_id: uuid.UUID = Field(description="the export being gathered (GET /exports/{export_id})")
    requested_at: AwareDatetime = Field(description="when it was asked for")


class ExportMail(Payload):
    """One sent e-mail as it went out (an .eml file), or a slice of one: slices of the same
    ``filename`` in chunk order make the whole base64 text."""

    filename: str = Field(max_length=200, examples=["2031-03-03T093000Z_welcome_0b7c2f7e.eml"])
    content_base64: str = Field(description="base64 of the .eml file (or of a slice of its base64 text)")


class ExportPart(Payload):
    """One service's part of an export, or one chunk of it: ``part`` holds some of its sections
    (a list section may be spread over chunks, in order), ``mail`` some of the e-mails sent
    (nurture). Leads puts the chunks back together when it holds all ``chunks`` of them."""

    export_id: uuid.UUID = Field(description="the export this answers")
    service: str = Field(max_length=20, examples=["billing"], description="the service whose part this is")
    chunk: int = Field(ge=1, le=100_000, description="this chunk's number, from 1")
    chunks: int = Field(ge=1, le=100_000, description="how many chunks the service's part has")
    part: dict[str, Any] = Field(default_factory=dict, description="sections of the part (personal data)")
    mail: list[ExportMail] = Field(default_factory=list, description="sent e-mails (nurture; personal data)")


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
        ("lead.assigned", LeadAssigned),
        ("lead.activity_logged", LeadActivityLogged),
    ),
    **_t(
        topics.DEALS,
        ("deal.proposed", DealProposed),
        ("deal.won", DealWon),
        ("deal.lost", DealLost),
        ("deal.change_requested", DealChangeRequested),
        ("deal.revised", DealRevised),
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
        ("deal.written_off", DealWrittenOff),
        ("subscription.price_changed", SubscriptionPriceChanged),
    ),
    **_t(
        topics.CANCELLATIONS,
        ("cancellation.requested", CancellationRequested),
        ("cancellation.saved", CancellationSaved),
        ("cancellation.completed", CancellationCompleted),
        ("client.terminated", ClientTerminated),
    ),
    **_t(
        topics.RETENTION,
        ("client.health_changed", ClientHealthChanged),
        ("client.tier_changed", ClientTierChanged),
        ("client.tier_set_manually", ClientTierSetManually),
        ("churn_risk.raised", ChurnRiskRaised),
        ("referral.made", ReferralMade),
        ("loyalty.points_awarded", LoyaltyPointsAwarded),
        ("exchange_rate.set", ExchangeRateSet),
        ("client.hours_underused", ClientHoursUnderused),
    ),
    **_t(
        topics.PEOPLE,
        ("person.added", PersonState),
        ("person.updated", PersonState),
        ("person.disabled", PersonState),
        ("token.created", TokenState),
        ("token.revoked", TokenState),
    ),
    **_t(topics.TASKS, ("task.raised", TaskRaised), ("task.closed", TaskClosed)),
    **_t(topics.CLOCK, ("clock.advanced", ClockAdvanced)),
    **_t(topics.KEYS, ("person_key.created", PersonKeyCreated), ("person_key.destroyed", PersonKeyDestroyed)),
    **_t(topics.EXPORTS, ("export.requested", ExportRequested), ("export.part", ExportPart)),
}

# Personal data in each event type's payload (crypto-shredding): the paths ``UnitOfWork.emit``
# seals with the person's key. ``field`` is a top-level field; ``items[].field`` a field of
# every item of a list. Amounts, dates, ids, codes and counts stay readable, so figures can
# always be rebuilt; names, addresses, free text, signer names and IP addresses do not.
PERSONAL: dict[str, tuple[str, ...]] = {
    "lead.captured": (
        "name",
        "email",
        "company",
        "job_title",
        "campaign",
        "utm",
        "timeline",
        "needs",
        "account_name",
    ),
    "lead.qualified": ("notes",),
    "lead.activity_logged": ("outcome",),
    "deal.proposed": ("title", "lines[].description"),
    "deal.revised": ("title", "lines[].description"),
    "deal.won": ("title", "lines[].description", "signed_by", "signed_ip"),
    "deal.lost": ("reason",),
    "deal.change_requested": ("description",),
    "email.sent": ("subject",),
    "email.clicked": ("url",),
    "email.bounced": ("reason",),
    "feedback.received": ("comment",),
    "takeover.started": ("reason",),
    "invoice.issued": ("lines[].description",),
    "payment.succeeded": ("reference",),
    "cancellation.requested": ("comment",),
    "client.terminated": ("comment",),
    "client.tier_set_manually": ("reason",),
    "referral.made": ("name", "email", "company", "note"),
    "task.raised": ("title", "detail"),
    "export.part": ("part", "mail"),  # a person's whole record (exports topic)
}
for _type, _paths in PERSONAL.items():
    _model = EVENT_TYPES[_type].model
    for _path in _paths:
        assert _path.split("[]")[0] in _model.model_fields, f"{_type}: no field {_path}"


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

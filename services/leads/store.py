"""Leads' own tables."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import NAMING, Money, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    # Dedupe key (lower case, no +tag, Gmail without dots); None once erased or merged away.
    email_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    company_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    job_title: Mapped[str | None] = mapped_column(String(200))
    industry: Mapped[str | None] = mapped_column(String(100))
    employees: Mapped[int | None]
    annual_revenue: Mapped[Decimal | None] = mapped_column(Money())
    country: Mapped[str | None] = mapped_column(String(2))
    language: Mapped[str] = mapped_column(String(8), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    channel: Mapped[str] = mapped_column(String(32), index=True)
    campaign: Mapped[str | None] = mapped_column(String(200))
    utm: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    budget: Mapped[Decimal | None] = mapped_column(Money())
    currency: Mapped[str | None] = mapped_column(String(3))
    brief: Mapped[str | None] = mapped_column(Text)
    timeline: Mapped[str | None] = mapped_column(String(500))
    needs: Mapped[list[str]] = mapped_column(JSON, default=list)
    consent_marketing: Mapped[bool] = mapped_column(default=False)
    legal_basis: Mapped[str | None] = mapped_column(String(100))
    referred_by: Mapped[uuid.UUID | None]
    stage: Mapped[str] = mapped_column(String(20), index=True)
    fit_score: Mapped[int]
    fit_matched: Mapped[list[str]] = mapped_column(JSON, default=list)
    fit_missed: Mapped[list[str]] = mapped_column(JSON, default=list)
    engagement_score: Mapped[int] = mapped_column(default=0)
    red_flags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tier: Mapped[str | None] = mapped_column(String(20), index=True)
    tier_reasons: Mapped[list[str] | None] = mapped_column(JSON)
    # Engagement decays: the points held at ``engagement_at``; the score is read from them and now.
    engagement_points: Mapped[Decimal | None] = mapped_column(Money())
    engagement_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    qualification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    qualified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    merged_into: Mapped[uuid.UUID | None] = mapped_column(index=True)
    referrals: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # A returning client the agency once let go: every estimate is multiplied by this (returning.py).
    surcharge: Mapped[Decimal | None] = mapped_column(Money())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The sales department: who handles the lead (role sales, success or admin) and, once won,
    # who looks after the client (role success); speed to lead on the business clock.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    first_touch_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    first_touched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The company account the person belongs to (accounts.py); None: free mail or no company.
    account_id: Mapped[uuid.UUID | None] = mapped_column(index=True)

    # The funnel gauges count live leads per stage from this index alone (a scan of the table
    # reads every lead's whole row: with a hundred thousand leads, most of a scrape).
    # Dedupe's company candidates (record.py: a company's first live leads in capture order)
    # come from the partial index in order. With ix_leads_company_domain alone SQLite read every
    # live lead through ix_leads_merged_into for a batch's candidates: 100 ms a query with
    # 100,000 leads, growing with the history.
    __table_args__ = (
        Index("ix_leads_merged_into_stage", "merged_into", "stage"),
        Index(
            "ix_leads_company_live",
            "company_domain",
            "created_at",
            "id",
            sqlite_where=text("merged_into IS NULL AND erased_at IS NULL"),
            postgresql_where=text("merged_into IS NULL AND erased_at IS NULL"),
        ),
    )

    @property
    def red_flag_names(self) -> list[str]:
        return [flag["name"] for flag in self.red_flags]


class Touch(Base):
    """Each time a person reached us (first capture and every duplicate since)."""

    __tablename__ = "touches"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    # Never read (``raise`` on access): it tells the unit of work to insert a lead captured in
    # the same transaction before this row, so a capture need not flush on its own.
    lead: Mapped[Lead] = relationship(lazy="raise")
    channel: Mapped[str] = mapped_column(String(32))
    campaign: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    utm: Mapped[dict[str, str] | None] = mapped_column(JSON)
    matched_by: Mapped[str | None] = mapped_column(String(20))  # None: first capture; email | company_domain
    # A colleague matched on the company domain: who wrote (personal data, cleared on erasure).
    contact_name: Mapped[str | None] = mapped_column(String(200))
    contact_email: Mapped[str | None] = mapped_column(String(320))


class StageChange(Base):
    __tablename__ = "stage_history"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    lead: Mapped[Lead] = relationship(lazy="raise")  # flush order only: see Touch.lead
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    cause: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Deal(Base):
    __tablename__ = "deals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    total: Mapped[Decimal] = mapped_column(Money())
    monthly_fee: Mapped[Decimal | None] = mapped_column(Money())
    included_hours: Mapped[Decimal | None] = mapped_column(Money())
    hourly_rate: Mapped[Decimal | None] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    signed_by: Mapped[str | None] = mapped_column(String(200))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deposit_share: Mapped[Decimal | None] = mapped_column(Money())
    lost_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Who proposed it (the lead's owner then): a rep's won value and commission follow it.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    # A tender: the deadline the proposal must be submitted by, and when its reminder went.
    submission_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The estimate the client signs: its version (1 at first, one more per revision), the digest
    # of that version's content, and until when it may be accepted (None: written before links).
    version: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    digest: Mapped[str | None] = mapped_column(String(64))
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How it was signed: staff (a name typed in) or link (the client, from the acceptance link),
    # from which address, and the version and digest of exactly what was accepted.
    signed_via: Mapped[str | None] = mapped_column(String(10))
    signed_ip: Mapped[str | None] = mapped_column(String(64))
    accepted_version: Mapped[int | None]
    accepted_digest: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_deals_status", "status"),)


class EstimateVersion(Base):
    """Every version of an estimate as it was written (the deal row holds the latest): its full
    content as JSON and the SHA-256 of that content's canonical JSON (``domain.estimates``)."""

    __tablename__ = "estimate_versions"

    deal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deals.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TerminatedClient(Base):
    """A client the agency let go (``client.terminated``): the person, their company's domain and
    normalised name, so a later lead from them is flagged ``terminated_before`` (returning.py)."""

    __tablename__ = "terminated_clients"

    termination_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # SHA-256 of the normalised e-mail: who it was is matched, not kept (an erasure leaves it).
    email_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    domain: Mapped[str | None] = mapped_column(String(255), index=True)  # none for free mail
    company: Mapped[str | None] = mapped_column(String(200), index=True)  # normalised
    reason: Mapped[str] = mapped_column(String(40))
    terminated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LeadRedFlag(Base):
    """One raised red flag (the lead's ``red_flags`` list mirrors these); here for filtering."""

    __tablename__ = "lead_red_flags"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    lead: Mapped[Lead] = relationship(lazy="raise")  # flush order only: see Touch.lead
    name: Mapped[str] = mapped_column(String(50), index=True)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("lead_id", "name", name="uq_lead_red_flags_lead_id_name"),)


class Activity(Base):
    """The lead's timeline: every event about the person, with what it changed."""

    __tablename__ = "lead_activity"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    lead: Mapped[Lead] = relationship(lazy="raise")  # flush order only: see Touch.lead
    type: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ChangeRequest(Base):
    __tablename__ = "change_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    deal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deals.id"), index=True)
    description: Mapped[str] = mapped_column(Text)
    line: Mapped[int | None]
    in_scope: Mapped[bool]
    hours: Mapped[Decimal | None] = mapped_column(Money())
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ChannelSpend(Base):
    """Money spent on a channel over a period; recording the same period again replaces it."""

    __tablename__ = "channel_spend"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), index=True)
    period_start: Mapped[date]
    period_end: Mapped[date]
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("channel", "period_start", "period_end", "currency", name="uq_channel_spend_period"),
    )


class IcpVersion(Base):
    """Every ideal client profile ever set, as its YAML text; the newest is in force."""

    __tablename__ = "icp_versions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Merge(Base):
    """An explicit merge of a duplicate into the lead that stays (kept as the audit log)."""

    __tablename__ = "lead_merges"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kept_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    merged_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), unique=True)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class SalesActivity(Base):
    """A call, meeting, e-mail or note a person logged on a lead, with its outcome and next step."""

    __tablename__ = "sales_activities"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str | None] = mapped_column(Text)
    next_step: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    by_id: Mapped[uuid.UUID | None]
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class SalesRep(Base):
    """How many open leads a person in sales takes relative to the others (default 1)."""

    __tablename__ = "sales_reps"

    person_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    capacity: Mapped[int] = mapped_column(default=1)
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SalesDocument(Base):
    """Every assignment rule book and commission plan ever set, as JSON; the newest is in force."""

    __tablename__ = "sales_documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)  # assignment_rules | commission_plan
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Quota(Base):
    """A rep's target of won value for one month."""

    __tablename__ = "quotas"

    person_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))


class ClientPayment(Base):
    """Money a client paid (from billing's events): deposits and invoices, for each rep's figures."""

    __tablename__ = "client_payments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # the payment's id; a deposit's is made from its invoice
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # deposit (from deposit.cleared) | invoice (payment.succeeded; a deposit invoice's payment is
    # left out where its deposit row is, whichever arrived first)
    kind: Mapped[str] = mapped_column(String(10))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class PendingDeposit(Base):
    """A deposit invoice billing issued (``invoice.issued`` kind deposit), until it clears or is
    voided: one left unpaid too long raises ``refuses_deposit`` on the lead."""

    __tablename__ = "pending_deposits"

    invoice_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    deal_id: Mapped[uuid.UUID | None]
    number: Mapped[str] = mapped_column(String(40))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # cleared or voided
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Account(Base):
    """A company: the people at the same work domain with the same company name (accounts.py)."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("domain", "name_key", name="uq_accounts_domain_name_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # as the first person wrote it
    domain: Mapped[str] = mapped_column(String(255))
    name_key: Mapped[str] = mapped_column(String(200))  # normalised (domain.accounts.account_key)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --------------------------------------------------------------------------- exports (issue 21, part 3)


class Export(Base):
    """A person's data gathered on request (exports.py): who asked, when, and until when it is
    kept; complete once every service's part is in (``export_chunks``)."""

    __tablename__ = "exports"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    requested_by: Mapped[dict[str, Any]] = mapped_column(JSON)  # the actor: kind, id, role
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ExportChunk(Base):
    """One chunk of one service's part of an export, as it came (``export.part``; leads' own is
    written at the request): sections of the part and, for nurture, the e-mails sent."""

    __tablename__ = "export_chunks"

    export_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("exports.id"), primary_key=True)
    export: Mapped[Export] = relationship(lazy="raise")  # flush order only: see Touch.lead
    service: Mapped[str] = mapped_column(String(20), primary_key=True)
    chunk: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    chunks: Mapped[int]
    part: Mapped[dict[str, Any]] = mapped_column(JSON)
    mail: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

"""Nurture's own tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Contact(Base):
    """The person as nurture needs them: how to write to them, whether they agreed to it, who
    they are for segment conditions, and how engaged they are."""

    __tablename__ = "contacts"

    lead_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(16), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    segment: Mapped[str] = mapped_column(String(50), default="default")
    consent_marketing: Mapped[bool] = mapped_column(default=False)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stage: Mapped[str | None] = mapped_column(String(30))
    tier: Mapped[str | None] = mapped_column(String(20))
    industry: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(100))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    engagement_score: Mapped[int] = mapped_column(default=0, server_default="0")
    engaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sales_ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who works with them, folded from ``lead.captured`` and ``lead.assigned``: the lead's owner
    # (sales) and, once a client, the account owner (success). Tasks go to them.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    account_owner_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class Enrollment(Base):
    """A person in a sequence; ``key`` tells enrollments apart when re-entry allows several
    (the invoice id for invoice reminders, the enrollment time for ``after`` rules)."""

    __tablename__ = "enrollments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID]  # indexed by the unique constraint, which starts with it
    sequence: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(20))  # active | completed | exited | cancelled
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # The trigger's payload, for templates (invoice number, amount, new price...).
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("lead_id", "sequence", "key", name="uq_enrollments_lead_sequence_key"),)


class ScheduledMessage(Base):
    """One step of one enrollment, durable: the sender picks it when due and not held."""

    __tablename__ = "scheduled_messages"

    # Also the sent message's id (and Message-ID), so a retried send carries the same id.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    sequence: Mapped[str] = mapped_column(String(63))
    step: Mapped[int]
    template: Mapped[str] = mapped_column(String(63))
    category: Mapped[str] = mapped_column(String(20))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | sent | suppressed | cancelled | skipped | failed
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A sender claims a row until this moment; another instance (or a retry) waits for it.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enrollment_id: Mapped[uuid.UUID | None]
    condition: Mapped[str | None] = mapped_column(String(40))
    immediate: Mapped[bool] = mapped_column(default=False, server_default="0")
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("enrollment_id", "step", name="uq_scheduled_messages_enrollment_step"),
        Index("ix_scheduled_messages_due", "status", "due_at"),
    )


class Message(Base):
    """An email that went out (its ``message_id`` is the Message-ID header's local part)."""

    __tablename__ = "messages"

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID]
    sequence: Mapped[str] = mapped_column(String(63))
    step: Mapped[int]
    template: Mapped[str] = mapped_column(String(63))
    language: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(998))
    category: Mapped[str] = mapped_column(String(20))
    to_address: Mapped[str | None] = mapped_column(String(320))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    body_text: Mapped[str | None] = mapped_column(Text)
    enrollment_id: Mapped[uuid.UUID | None]
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_messages_lead_sent", "lead_id", "sent_at"),)


class Takeover(Base):
    """A human handling a person; while one is open (``ended_at`` null) automation holds."""

    __tablename__ = "takeovers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_by: Mapped[str | None] = mapped_column(String(200))
    # ``reply`` (an inbound reply started it: it ends by itself at ``ends_at``) or ``person``
    # (it lasts until they end it; ``ends_at`` null). Takeovers from before are a person's.
    started_by_kind: Mapped[str] = mapped_column(String(10), default="person", server_default="person")
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class SequenceDefinition(Base):
    """A sequence written through ``PUT /sequences/{name}``; it wins over the built-in file."""

    __tablename__ = "sequence_definitions"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Reply(Base):
    """An inbound email from a person (recorded by the inbound webhook)."""

    __tablename__ = "replies"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # None until matched: by its thread (a Message-ID we sent) or by a person.
    lead_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    matched_by: Mapped[str | None] = mapped_column(String(20), default=None)
    message_id: Mapped[uuid.UUID | None]
    from_address: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(998))
    text: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Feedback(Base):
    """An answer to a one-question survey (0-10 and a comment)."""

    __tablename__ = "feedback"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    survey: Mapped[str] = mapped_column(String(63))
    score: Mapped[int | None]
    comment: Mapped[str | None] = mapped_column(Text)
    complaint: Mapped[bool] = mapped_column(default=False)
    message_id: Mapped[uuid.UUID | None]
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Task(Base):
    """Work for a person (a reply to answer, a client to call), raised by nurture or by another
    service (``task.raised``); ``source`` makes it once. ``status`` is ``open``, ``done`` or
    ``snoozed``: a snoozed task whose ``snoozed_until`` passed is open again (computed on read,
    ``domain.task_status``), so nothing has to wake it."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="open")
    source: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Who must do it (null: nobody yet, an admin's pool) and by when (business clock).
    owner_id: Mapped[uuid.UUID | None] = mapped_column(index=True, default=None)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    closed_reason: Mapped[str | None] = mapped_column(String(200), default=None)


class ConsentRecord(Base):
    """One grant, request or withdrawal of a person's marketing consent: when, from where, and
    the wording version they saw (the history ``GET /leads/{lead_id}/consent`` lists)."""

    __tablename__ = "consent_records"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(20))  # grant | request | withdrawal
    source: Mapped[str] = mapped_column(String(40))  # form | import | referral | unsubscribe_link | ...
    wording: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A request: when its link was confirmed (the grant that followed is its own record).
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

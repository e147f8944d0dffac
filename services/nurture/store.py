"""Nurture's own tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import NAMING, UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Contact(Base):
    """The person as nurture needs them: how to write to them and whether they agreed to it."""

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


class Enrollment(Base):
    """A person in a sequence; one enrollment per person and sequence, ever."""

    __tablename__ = "enrollments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID]  # indexed by the unique constraint, which starts with it
    sequence: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(20))  # active | completed | exited | cancelled
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (UniqueConstraint("lead_id", "sequence", name="uq_enrollments_lead_sequence"),)


class ScheduledMessage(Base):
    """One step of one enrollment, durable: the sender picks it when due and not held."""

    __tablename__ = "scheduled_messages"

    # Also the sent message's id (and Message-ID), so a retried send carries the same id.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    lead_id: Mapped[uuid.UUID]  # indexed by the unique constraint, which starts with it
    sequence: Mapped[str] = mapped_column(String(63))
    step: Mapped[int]
    template: Mapped[str] = mapped_column(String(63))
    category: Mapped[str] = mapped_column(String(20))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20))  # pending | sent | suppressed | cancelled
    reason: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A sender claims a row until this moment; another instance (or a retry) waits for it.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("lead_id", "sequence", "step", name="uq_scheduled_messages_lead_sequence_step"),
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

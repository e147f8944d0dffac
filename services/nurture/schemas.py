"""Nurture's HTTP request and response bodies (JSON names fixed by docs/design.md, "HTTP surface").

Responses read straight from a stored row (``from_attributes``) where their fields are the
row's; the others are built by the routes (``api.py``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field


class MessageOut(BaseModel):
    """An email sent to the person; ``subject`` is null once the person was erased."""

    message_id: uuid.UUID
    sequence: str = Field(examples=["welcome"])
    step: int = Field(examples=[0])
    template: str = Field(examples=["welcome"])
    subject: str | None
    category: Literal["marketing", "transactional"]
    sent_at: datetime
    language: str | None = Field(default=None, description="the language it was written in", examples=["fa"])
    body_text: str | None = Field(
        default=None, description="the text part as sent, with its signed links; only for a caller with the API key"
    )
    open_url: str | None = Field(
        default=None, description="the signed open-tracking pixel of the HTML part; only for a caller with the API key"
    )


class TakeoverIn(BaseModel):
    """A human takes the person over; every automated email to them waits until released."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=200, examples=["maria@agency.example"])
    reason: str | None = Field(default=None, max_length=2000, examples=["replied asking for a call"])


class TakeoverOut(BaseModel):
    lead_id: uuid.UUID
    by: str
    reason: str | None
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    active: bool
    started_by_kind: Literal["reply", "person"] = Field(
        description="who started it: an inbound `reply` (it ends by itself) or a `person` (until they end it)"
    )
    ends_at: datetime | None = Field(
        description="when a reply's takeover ends by itself (business days; null for a person's)"
    )


class TakeoverExtendIn(BaseModel):
    """A person keeps a reply's takeover longer."""

    days: int = Field(ge=1, le=60, description="business days to push its end by", examples=[5])


class SequenceOut(BaseModel):
    """A sequence definition as stored (YAML file or API), with where it came from."""

    name: str
    source: Literal["builtin", "api"]
    trigger: str
    category: Literal["marketing", "transactional"]
    definition: dict[str, Any] = Field(description="the definition's fields, as written")


class BounceIn(BaseModel):
    """A bounce report from the mail provider (or its webhook translated to this shape)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    message_id: uuid.UUID | None = Field(default=None, description="the bounced message's id (Message-ID local part)")
    email: str | None = Field(default=None, max_length=320, description="the address, when the message is unknown")
    hard: bool = True
    reason: str | None = Field(default=None, max_length=2000, examples=["550 5.1.1 no such user"])


class InboundIn(BaseModel):
    """An inbound email (a reply), as a mail provider's inbound webhook posts it."""

    lead_id: uuid.UUID | None = Field(
        default=None, description="only from a person's token (entered by hand); a provider's is ignored"
    )
    in_reply_to: str | None = Field(default=None, max_length=998, description="In-Reply-To header or message id")
    references: str | None = Field(
        default=None, max_length=20_000, description="References header: Message-IDs of the thread"
    )
    from_address: str | None = Field(default=None, max_length=320, alias="from", examples=["ada@example.com"])
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = Field(default=None, max_length=100_000)

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)


class ReplyOut(BaseModel):
    reply_id: uuid.UUID
    lead_id: uuid.UUID | None = Field(
        description="the person it was matched to; null: unmatched, for a person to look at"
    )
    matched: bool
    matched_by: str | None = Field(default=None, description="thread (a Message-ID we sent), person (matched by hand)")
    takeover_started: bool
    task_id: uuid.UUID | None
    from_address: str | None = None
    subject: str | None = None
    received_at: datetime | None = None


class MatchIn(BaseModel):
    lead_id: uuid.UUID = Field(description="the person who wrote it")


class FeedbackIn(BaseModel):
    """One survey answer: 0-10 and an optional comment. From an email link (``token``, public)
    or from a system with the API key (``lead_id``)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    token: str | None = Field(default=None, max_length=200, description="the survey token of the email link")
    lead_id: uuid.UUID | None = None
    survey: str | None = Field(default=None, max_length=63, examples=["onboarding"])
    score: int | None = Field(default=None, ge=0, le=10)
    comment: str | None = Field(default=None, max_length=5000)


class FeedbackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    feedback_id: uuid.UUID = Field(validation_alias=AliasChoices("feedback_id", "id"))
    lead_id: uuid.UUID
    survey: str
    score: int | None
    comment: str | None
    complaint: bool
    received_at: datetime


class TaskOut(BaseModel):
    """A task as its owner sees it now (built by ``tasks_api.task_out``)."""

    task_id: uuid.UUID
    lead_id: uuid.UUID
    kind: str = Field(examples=["churn_risk"])
    title: str = Field(examples=["Founder check-in with Ada: can we help?"])
    detail: str | None
    status: Literal["open", "done", "snoozed"] = Field(
        description="now: a task snoozed until a moment that passed is open again"
    )
    owner_id: uuid.UUID | None = Field(description="whose list it is on; null: nobody's yet (an admin's pool)")
    due_at: datetime = Field(description="when it must be done (business clock)")
    overdue: bool = Field(description="open and past due_at")
    snoozed_until: datetime | None = Field(default=None, description="put away until then")
    done_at: datetime | None = None
    closed_reason: str | None = Field(default=None, examples=["reached by call"])
    created_at: datetime


class SnoozeIn(BaseModel):
    """Put a task away until a later moment (RFC 3339, with its offset)."""

    until: AwareDatetime = Field(examples=["2030-01-08T09:00:00Z"])


class TaskOwnerIn(BaseModel):
    """Give a task to a person (sales, success or admin), or to nobody (null)."""

    owner_id: uuid.UUID | None = Field(examples=["0b7c2f7e-9f5e-4e0b-8a55-0c8f3f7c8d21"])

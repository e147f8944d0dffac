"""Nurture's HTTP request and response bodies (JSON names fixed by DESIGN.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MessageOut(BaseModel):
    """An email sent to the person; ``subject`` is null once the person was erased."""

    message_id: uuid.UUID
    sequence: str = Field(examples=["welcome"])
    step: int = Field(examples=[0])
    template: str = Field(examples=["welcome"])
    subject: str | None
    category: Literal["marketing", "transactional"]
    sent_at: datetime


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

"""Identifiers that follow the clock (RFC 9562 UUID version 7).

Every row that history grows (leads, deals, invoices, payments, enrollments, consent
records, loyalty awards, and every event) is keyed by one. A random (version 4) key sends each
insert to a random page of a B-tree that grows with history: with 100,000 leads a batch's
commit dirtied a page per row in every index keyed by a lead, in every service that keeps
leads. Keys that follow the clock land together at the index's newest end, so a batch writes a
few pages whatever the history. The 74 random bits keep them unguessable enough for ids (they
are never secrets: tokens are made elsewhere)."""

from __future__ import annotations

import os
import time
import uuid


def time_ordered_id() -> uuid.UUID:
    """48 bits of Unix milliseconds, then 74 random bits (version 7, the RFC's variant)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (7 << 76)  # version 7
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # the RFC's variant
    return uuid.UUID(int=value)

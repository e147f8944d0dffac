"""Public links and inbound threads: tokens that sign a link for one person or one message
and purpose, which links may be tracked, and which of our messages an inbound e-mail answers.

Pure: the secret comes in as a value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from typing import Literal
from urllib.parse import urlparse


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def unsubscribe_token(secret: str, lead_id: uuid.UUID) -> str:
    """A public, unguessable token naming the person: ``<lead_id hex>.<HMAC-SHA256, base64url>``."""
    return f"{lead_id.hex}.{_mac(secret, f'unsubscribe:{lead_id}')}"


def verify_unsubscribe_token(secret: str, token: str) -> uuid.UUID | None:
    """The person a token names, or None when it was not signed with ``secret``."""
    try:
        raw_id, _ = token.split(".", 1)
        lead_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    return lead_id if hmac.compare_digest(unsubscribe_token(secret, lead_id).encode(), token.encode()) else None


TokenPurpose = Literal["open", "click", "survey"]


def message_token(secret: str, purpose: TokenPurpose, message_id: uuid.UUID, extra: str = "") -> str:
    """A token for one purpose on one message (for clicks, ``extra`` is the target URL, so a
    token cannot be reused to redirect elsewhere)."""
    return f"{message_id.hex}.{_mac(secret, f'{purpose}:{message_id}:{extra}')}"


def verify_message_token(secret: str, purpose: TokenPurpose, token: str, extra: str = "") -> uuid.UUID | None:
    """The message a token names for ``purpose`` (and ``extra``), or None when it was not
    signed with ``secret`` for them."""
    try:
        raw_id, _ = token.split(".", 1)
        message_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    expected = message_token(secret, purpose, message_id, extra)
    return message_id if hmac.compare_digest(expected.encode(), token.encode()) else None


# --------------------------------------------------------------------------- inbound threads

_MESSAGE_ID = re.compile(r"<?\s*([0-9a-fA-F-]{32,36})@[^>\s]+>?")


def thread_message_ids(in_reply_to: str | None, references: str | None) -> list[uuid.UUID]:
    """The Message-IDs an inbound e-mail's thread names, newest first (In-Reply-To, then
    References from the end): ours have the sent message's id as their local part."""
    found: list[uuid.UUID] = []
    for header in (in_reply_to or "", " ".join(reversed((references or "").split()))):
        for local in _MESSAGE_ID.findall(header):
            try:
                message_id = uuid.UUID(local)
            except ValueError:
                continue
            if message_id not in found:
                found.append(message_id)
    return found[:50]


def trackable(url: str) -> bool:
    """A tracked link leads to a web page (http or https), never to another scheme."""
    return urlparse(url).scheme in ("http", "https")

"""Consent kept honest: what a form with the consent box ticked does, and the signed link that
confirms a request.

- A person who never withdrew consent is **granted** it by a form (or an import) that ticks
  the box; a form that leaves it empty takes nothing back (only an unsubscribe does).
- A person who **unsubscribed** or whose address **bounced** is not granted consent again by a
  form anyone could submit with their address: the form records a **request** and a
  confirmation e-mail goes to the address (double opt-in). Marketing comes back only when the
  person confirms through the signed link in it (``POST``; a ``GET`` only shows the page: mail
  scanners open links).
- Every grant, request and withdrawal is kept (``consent_records``): when, its source (form,
  import, referral, unsubscribe link, confirmation link, staff) and the wording version the
  person saw (``NURTURE_CONSENT_WORDING_VERSION`` unless the capture names one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Literal

ConsentKind = Literal["grant", "request", "withdrawal"]
SOURCES = ("form", "import", "referral", "unsubscribe_link", "confirmation_link", "staff")
CaptureOutcome = Literal["grant", "request", "none"]


def on_capture(*, ticked: bool, consent_now: bool, withdrawn: bool) -> CaptureOutcome:
    """What a capture with the consent box ``ticked`` does for a person who has consent now
    (``consent_now``) or not, and who withdrew it (or bounced) before (``withdrawn``)."""
    if not ticked or consent_now:
        return "none"
    return "request" if withdrawn else "grant"


def merged_consent(*, current: bool, incoming: bool, withdrawn: bool) -> bool:
    """The person's consent after a capture: a ticked box grants it, unless they withdrew it
    before (then only the confirmation link does); an empty box takes nothing back."""
    return current or (incoming and not withdrawn)


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def confirm_token(secret: str, request_id: uuid.UUID) -> str:
    """The public token of a consent request's confirmation link: ``<id hex>.<HMAC-SHA256>``."""
    return f"{request_id.hex}.{_mac(secret, f'consent-confirm:{request_id}')}"


def verify_confirm_token(secret: str, token: str) -> uuid.UUID | None:
    """The request a confirmation token names, or None when it was not signed with ``secret``."""
    try:
        raw_id, _ = token.split(".", 1)
        request_id = uuid.UUID(hex=raw_id)
    except ValueError:
        return None
    return request_id if hmac.compare_digest(confirm_token(secret, request_id).encode(), token.encode()) else None

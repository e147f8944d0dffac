"""Signed webhooks, as Stripe signs its own: the provider sends ``Clientflow-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``; a receiver checks the digest with
the shared secret and that the timestamp is recent (an old request replayed is refused).
Billing's payment webhook and nurture's mail webhooks use it."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from shared.errors import DomainError

SIGNATURE_HEADER = "Clientflow-Signature"


class BadSignature(DomainError):
    """A webhook whose signature or timestamp does not check out (400, as Stripe answers)."""

    status = 400


def sign(*, body: bytes, secret: str, timestamp: int) -> str:
    """The header value a provider sends: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
    ``"<t>." + body``, as Stripe signs its webhooks."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(*, header: str | None, body: bytes, secret: str, now: datetime, tolerance_s: int) -> int:
    """Check a webhook's signature and that it was signed within ``tolerance_s`` of ``now``
    (a replay of an old, validly signed request is refused). Returns the signed timestamp."""
    if not header:
        raise BadSignature(f"missing {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise BadSignature("signature header has no valid t=<unix seconds>") from None
    expected = sign(body=body, secret=secret, timestamp=timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        raise BadSignature("bad signature")
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise BadSignature(f"timestamp outside the {tolerance_s} s tolerance window (replayed or clock skew)")
    return timestamp

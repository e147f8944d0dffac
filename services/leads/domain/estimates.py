"""Estimates the client signs: what exactly a version of an estimate says (its content and the
digest of it), how long it may be accepted, the signed link that opens it, and whether a link
may still be used.

- **Content and digest.** A version's content is its title, kind, currency, scope lines,
  total, monthly fee, included hours, hourly rate and ``valid_until``. Its digest is the
  SHA-256 (hex) of the content's canonical JSON: keys sorted, no spaces, UTF-8, every amount
  as a plain decimal string without trailing zeros (``"1500"`` and ``"1500.00"`` are the same
  amount, so the same digest), times in UTC. The same content gives the same digest whatever
  the order its keys came in; any change of a line, an amount or the validity changes it.
- **Validity.** An estimate may be accepted until ``valid_until`` (default
  ``LEADS_ESTIMATE_VALID_DAYS`` days after it is written), which must be in the future.
- **The link.** ``{public_url}/estimates/{deal_id}/accept?v={version}&t={token}``: the token is
  the HMAC-SHA256 of ``shared.signing`` over the deal, the version and the expiry (the
  version's ``valid_until``), so it opens that one version until then, and nothing else.
- **Using it.** A bad signature is refused first (403); then a deal no longer proposed (won or
  lost: 409); then a version no longer the latest (410, superseded); then a link past its
  expiry (410, expired).

Pure: the secret and "now" come in as values."""

from __future__ import annotations

import hashlib
import hmac
import json
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from shared.money import quantize
from shared.signing import sign

# The purpose written into every acceptance token: a token made for anything else never opens an estimate.
PURPOSE = "estimate-acceptance"


class EstimatePolicy(BaseModel):
    """How long an estimate may be accepted (LEADS_ESTIMATE_VALID_DAYS)."""

    model_config = ConfigDict(frozen=True)

    valid_days: int = Field(default=30, ge=1, le=366, description="days an estimate may be accepted by default")

    def default_valid_until(self, written_at: datetime) -> datetime:
        return written_at + timedelta(days=self.valid_days)


def valid_until_for(given: datetime | None, *, now: datetime, policy: EstimatePolicy) -> datetime:
    """The expiry of an estimate written ``now``: the one given, which must be in the future, or
    the policy's default. ``ValueError`` names the field."""
    if given is None:
        return policy.default_valid_until(now)
    if given <= now:
        raise ValueError(f"valid_until: {given.isoformat()} is not in the future; an estimate must be open to accept")
    return given.astimezone(UTC)


# --------------------------------------------------------------------------- content and digest


def _plain(value: Any) -> str | None:
    """An amount as a plain decimal string with no trailing zeros (``"1500"``, ``"12.5"``)."""
    if value is None:
        return None
    text = format(Decimal(str(value)).normalize(), "f")
    return "0" if text in ("-0", "") else text


def content_of(
    *,
    title: str,
    kind: str,
    currency: str,
    lines: Iterable[Mapping[str, Any]],
    total: Decimal,
    monthly_fee: Decimal | None,
    included_hours: Decimal | None,
    hourly_rate: Decimal | None,
    valid_until: datetime | None,
) -> dict[str, Any]:
    """What one version of an estimate says, as plain JSON values (what is stored and digested)."""
    return {
        "title": title,
        "kind": kind,
        "currency": currency,
        "lines": [
            {"description": line["description"], "hours": _plain(line.get("hours")), "amount": _plain(line["amount"])}
            for line in lines
        ],
        "total": _plain(total),
        "monthly_fee": _plain(monthly_fee),
        "included_hours": _plain(included_hours),
        "hourly_rate": _plain(hourly_rate),
        "valid_until": valid_until.astimezone(UTC).isoformat() if valid_until is not None else None,
    }


def canonical_json(content: Mapping[str, Any]) -> bytes:
    """The one byte string a content is digested as: sorted keys, no spaces, UTF-8."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the content's canonical JSON."""
    return hashlib.sha256(canonical_json(content)).hexdigest()


# --------------------------------------------------------------------------- the signed link


def _signed_body(deal_id: uuid.UUID, version: int) -> bytes:
    return f"{PURPOSE}:{deal_id}:{version}".encode()


def acceptance_token(secret: str, *, deal_id: uuid.UUID, version: int, expires_at: datetime) -> str:
    """The token of one version's link: ``shared.signing``'s HMAC-SHA256 (hex) over the deal,
    the version and the expiry (unix seconds)."""
    header = sign(body=_signed_body(deal_id, version), secret=secret, timestamp=int(expires_at.timestamp()))
    return header.split("v1=", 1)[1]


def token_matches(secret: str, token: str, *, deal_id: uuid.UUID, version: int, expires_at: datetime) -> bool:
    """Whether ``token`` was signed with ``secret`` for this deal, version and expiry."""
    expected = acceptance_token(secret, deal_id=deal_id, version=version, expires_at=expires_at)
    return hmac.compare_digest(expected.encode(), token.encode("utf-8", "surrogatepass"))


def acceptance_url(base: str, *, secret: str, deal_id: uuid.UUID, version: int, expires_at: datetime) -> str:
    """The public link where the client reads this version and accepts it."""
    token = acceptance_token(secret, deal_id=deal_id, version=version, expires_at=expires_at)
    return f"{base.rstrip('/')}/estimates/{deal_id}/accept?{urlencode({'v': version, 't': token})}"


# --------------------------------------------------------------------------- using a link


class LinkState(StrEnum):
    """What a link can be used for now."""

    OPEN = "open"
    BAD_SIGNATURE = "bad_signature"
    ALREADY_ACCEPTED = "already_accepted"  # won through this very link flow before
    CLOSED = "closed"  # won by staff, or lost
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


@dataclass(frozen=True)
class LinkCheck:
    """A link's version, what the deal is now and the secret's verdict, in one value."""

    signature_ok: bool
    status: str
    signed_via: str | None
    version: int
    latest_version: int
    valid_until: datetime | None


def link_state(check: LinkCheck, *, now: datetime) -> LinkState:
    """Whether a link may be used ``now``, refusals in the order the module says."""
    if not check.signature_ok or check.valid_until is None:
        return LinkState.BAD_SIGNATURE
    if check.status == "won" and check.signed_via == "link":
        return LinkState.ALREADY_ACCEPTED
    if check.status != "proposed":
        return LinkState.CLOSED
    if check.version != check.latest_version:
        return LinkState.SUPERSEDED
    if now > check.valid_until:
        return LinkState.EXPIRED
    return LinkState.OPEN


def accepted_name(name: str | None) -> str:
    """The name the client typed, trimmed; ``ValueError`` naming ``name`` when there is none."""
    typed = " ".join((name or "").split())
    if not typed:
        raise ValueError("name: type your full name to accept the estimate")
    if len(typed) > 200:
        raise ValueError("name: at most 200 characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in typed):
        raise ValueError("name: control characters are not part of a name")
    return typed


def deposit_amount(*, kind: str, total: Decimal, monthly_fee: Decimal | None, share: Decimal) -> Decimal:
    """The deposit the client will be asked, as billing will compute it: the share of a
    project's total, or of a retainer's first monthly fee."""
    base = monthly_fee if kind == "retainer" and monthly_fee is not None else total
    return quantize(base * share)


def percent(share: Decimal) -> str:
    """``Decimal("0.30")`` as ``"30"``."""
    return format((share * 100).normalize(), "f")

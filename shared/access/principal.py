"""Personal tokens and the principal a request acts as."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, field

from shared.events import Actor

TOKEN_PREFIX = "cf_"
# cf_<12 hex of the token id>_<43 url-safe characters: 256 random bits>
_TOKEN = re.compile(r"^cf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def new_token(token_id: uuid.UUID) -> str:
    """A new personal token. Its start names the token (for lists and revocation); the rest is
    256 random bits, so a digest without salt or stretching is as safe as the token itself."""
    return f"{TOKEN_PREFIX}{token_id.hex[:12]}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """What is stored and compared: the hex SHA-256 of the whole token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 12]


def looks_personal(token: str) -> bool:
    return bool(_TOKEN.match(token))


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, once its token checked out."""

    kind: str  # person | integration
    id: str
    role: str
    name: str = ""
    email: str | None = None
    scopes: tuple[str, ...] = ()
    token_id: str | None = None
    via: str = "token"  # token | bootstrap | oidc
    languages: tuple[str, ...] = field(default=())

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, role=self.role)

    @property
    def idempotency_owner(self) -> str:
        """Whose Idempotency-Keys these are: a person's keys are shared by their tokens."""
        return f"{self.kind}:{self.id}"


BOOTSTRAP = Principal(kind="integration", id="bootstrap", role="admin", name="CLIENTFLOW_API_KEY", via="bootstrap")


@dataclass(frozen=True)
class Refusal:
    """Why a token was refused (the 401's message and the failure metric's reason)."""

    reason: str  # invalid | expired | revoked | disabled | oidc
    message: str

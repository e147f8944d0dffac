"""Bearer tokens from an OpenID Connect provider, verified locally against its JWKS with PyJWT:
the signature (only the algorithms configured, never ``none``), issuer, audience and expiry.
The key set is fetched once and again when a token names a key id not seen yet (key rotation),
at most every ``refresh_s``, so a flood of forged key ids cannot make us hammer the provider."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.access.principal import Principal, Refusal
from shared.events import ROLES

if TYPE_CHECKING:
    import httpx
    import jwt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    jwks_url: str
    audience: str
    role_claim: str = "clientflow_role"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: int = 30


@dataclass(frozen=True)
class OidcIdentity:
    """A verified token's subject, e-mail and role (None when the token names none)."""

    subject: str
    email: str | None
    name: str
    role: str | None


class OidcVerifier:
    def __init__(self, config: OidcConfig, *, refresh_s: float = 30.0, client: httpx.AsyncClient | None = None) -> None:
        if "none" in {a.lower() for a in config.algorithms}:
            raise ValueError("the 'none' algorithm is never accepted")
        self.config = config
        self.refresh_s = refresh_s
        self._client = client
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.refresh_s and self._keys is not None:
                return
            self._fetched_at = time.monotonic()
            import httpx
            import jwt

            client = self._client or httpx.AsyncClient(timeout=5)
            try:
                response = await client.get(self.config.jwks_url)
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
                log.warning("could not read the OIDC key set at %s: %s", self.config.jwks_url, exc)
            finally:
                if self._client is None:
                    await client.aclose()

    async def _key(self, kid: str | None) -> Any:
        for attempt in (1, 2):
            if self._keys is not None:
                for key in self._keys.keys:
                    if kid is None or key.key_id == kid:
                        return key
            if attempt == 1:
                await self._fetch()
        return None

    async def verify(self, token: str) -> OidcIdentity | Refusal:
        # PyJWT and httpx (with cryptography's X.509, 8 MB resident) load with the first token
        # to verify: most deployments sign in with personal tokens and never configure OIDC.
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Refusal("invalid", "invalid token")
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            return Refusal("oidc", f"token algorithm {algorithm!r} is not accepted")
        key = await self._key(header.get("kid"))
        if key is None:
            return Refusal("oidc", "token signed by a key the identity provider does not publish")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return Refusal("expired", "token expired")
        except jwt.InvalidAudienceError:
            return Refusal("oidc", "token is for another audience")
        except jwt.InvalidIssuerError:
            return Refusal("oidc", "token from another issuer")
        except jwt.PyJWTError as exc:
            return Refusal("oidc", f"token does not verify: {exc}")
        return OidcIdentity(
            subject=str(claims["sub"]),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            name=str(claims.get("name") or claims.get("preferred_username") or claims["sub"])[:200],
            role=_role(claims.get(self.config.role_claim)),
        )


def _role(claim: Any) -> str | None:
    """The role a claim names: a string, or the first known role of a list."""
    values = claim if isinstance(claim, list) else [claim]
    for value in values:
        if isinstance(value, str) and value in ROLES:
            return value
    return None


def principal_of(identity: OidcIdentity, *, person: Any | None) -> Principal | Refusal:
    """The principal of a verified OIDC identity; ``person`` is the registry's row with the same
    e-mail, if any: a disabled person stays locked out, and one known here acts under their id."""
    if person is not None and not person.active:
        return Refusal("disabled", "person disabled")
    role = identity.role or (person.role if person is not None else None)
    if role is None:
        return Refusal("oidc", "token carries no Clientflow role")
    return Principal(
        kind="person",
        id=str(person.id) if person is not None else f"oidc:{identity.subject}",
        role=role,
        name=identity.name,
        email=identity.email,
        via="oidc",
        languages=tuple(person.languages or ()) if person is not None else (),
    )

"""Who is calling: the bootstrap key, a personal token (looked up by digest in this service's
own copy of the people registry) or an OpenID Connect token (verified locally). Nothing here
asks another service.

Answers are cached for ``cache_ttl_s`` (1 s): a hot path without a query per request, and a
revoked token or a disabled person still stops working within the 5 s the contract allows
(relay, broker and consumer take well under a second to bring the change here)."""

from __future__ import annotations

import hmac
import time
from collections import deque
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from shared.access.oidc import OidcVerifier, principal_of
from shared.access.principal import BOOTSTRAP, Principal, Refusal, looks_personal, token_hash
from shared.db import AccessPerson, AccessToken


def wall_now() -> datetime:
    # Token expiry is security, not business: it follows the real clock even when the business
    # clock is simulated (a simulated year must not expire everybody's token).
    return datetime.now(UTC)


class Authenticator:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker,
        bootstrap_key: str,
        oidc: OidcVerifier | None = None,
        cache_ttl_s: float = 1.0,
        cache_size: int = 10_000,
    ) -> None:
        self.sessions = sessions
        self._bootstrap = bootstrap_key.encode()
        self.oidc = oidc
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self._cache: dict[str, tuple[float, Principal | Refusal]] = {}

    async def authenticate(self, token: str, digest: str | None = None) -> Principal | Refusal:
        if self._bootstrap and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._bootstrap):
            return BOOTSTRAP
        digest = digest or token_hash(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_ttl_s:
            return cached[1]
        if looks_personal(token):
            answer = await self._personal(digest)
        elif self.oidc is not None and token.count(".") == 2:
            answer = await self._oidc(token)
        else:
            answer = Refusal("invalid", "invalid token")
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[digest] = (now, answer)
        return answer

    def forget(self) -> None:
        """Drop cached answers (this service just changed the registry itself)."""
        self._cache.clear()

    async def _personal(self, digest: str) -> Principal | Refusal:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(AccessToken, AccessPerson)
                    .join(AccessPerson, AccessPerson.id == AccessToken.person_id, isouter=True)
                    .where(AccessToken.token_hash == digest)
                )
            ).first()
        if row is None:
            return Refusal("invalid", "invalid token")
        token, person = row
        if token.revoked_at is not None:
            return Refusal("revoked", "token revoked")
        if token.expires_at is not None and token.expires_at <= wall_now():
            return Refusal("expired", "token expired")
        if person is None or not person.active:
            return Refusal("disabled", "person disabled")
        return Principal(
            kind="integration" if person.kind == "integration" else "person",
            id=str(person.id),
            role=person.role,
            name=person.name,
            email=person.email,
            scopes=tuple(token.scopes or ()),
            token_id=str(token.id),
            languages=tuple(person.languages or ()),
        )

    async def _oidc(self, token: str) -> Principal | Refusal:
        assert self.oidc is not None
        identity = await self.oidc.verify(token)
        if isinstance(identity, Refusal):
            return identity
        person = None
        if identity.email:
            async with self.sessions() as session:
                person = await session.scalar(
                    select(AccessPerson).where(AccessPerson.email == identity.email.lower()).limit(1)
                )
        return principal_of(identity, person=person)


class Lockout:
    """Slows guessing: ``failures`` bad tokens from one address within ``window_s`` lock it for
    ``lock_s``. While locked, the address gets 429 without its token being checked at all, except
    for tokens that already worked from there (a colleague behind the same NAT keeps working)."""

    def __init__(
        self, *, failures: int = 10, window_s: float = 60.0, lock_s: float = 60.0, max_addresses: int = 10_000
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.lock_s = lock_s
        self.max_addresses = max_addresses
        self._failed: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._good: dict[str, set[str]] = {}

    def retry_after(self, address: str, digest: str) -> int | None:
        """Seconds until ``address`` may try again, or None when this request may go on."""
        until = self._locked.get(address)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[address]
            return None
        if digest in self._good.get(address, ()):
            return None
        return max(1, int(left + 0.999))

    def failed(self, address: str) -> None:
        now = time.monotonic()
        if address not in self._failed and len(self._failed) >= self.max_addresses:
            self._failed.pop(next(iter(self._failed)))
        times = self._failed.setdefault(address, deque())
        times.append(now)
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.failures:
            self._locked[address] = now + self.lock_s
            times.clear()

    def succeeded(self, address: str, digest: str) -> None:
        good = self._good.get(address)
        if good is None:
            if len(self._good) >= self.max_addresses:
                self._good.pop(next(iter(self._good)))
            good = self._good[address] = set()
        if len(good) < 100:
            good.add(digest)

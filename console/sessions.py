"""Sessions: a signed cookie holding a random session id; the session itself (the person's
bearer token, who they are, their language, the CSRF token) stays in this process's memory.

Why server-side rather than the token in an encrypted cookie: the bearer token never reaches
the browser, so neither a script nor a stolen cookie backup reads it; signing out deletes the
session, so a copied cookie is dead at once; and the cookie stays small. The price: a restart of
the console signs everyone out (they sign in again with their token); the console has one
process (compose runs one), so a per-process store is enough.

Every visitor gets a session at their first request (anonymous until sign-in), so the sign-in
form carries a CSRF token too; signing in gives a new session id (no fixation).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "cf_console"
# Every visitor gets a session at once (the sign-in form's CSRF token): past this many, the
# oldest anonymous ones go first, so a flood of cookie-less requests cannot fill the memory.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    sid: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token: str = ""
    me: dict[str, Any] = field(default_factory=dict)
    lang: str = ""
    lang_chosen: bool = False  # picked with the switch (kept at sign-in), not guessed
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    # OpenID Connect sign-in under way: the state and PKCE verifier it started with.
    oidc_state: str = ""
    oidc_verifier: str = ""
    flash: list[str] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return bool(self.token)

    @property
    def role(self) -> str:
        return str(self.me.get("actor", {}).get("role", ""))

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset(self.me.get("permissions", ()))

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, str(presented))


class SessionStore:
    """Sessions by id, with an idle and an absolute lifetime; the cookie value is the id signed
    with the console's secret (a forged or altered cookie is an unknown visitor)."""

    def __init__(self, secret: str, *, idle_s: float, max_s: float) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="clientflow-console-session")
        self._sessions: dict[str, Session] = {}
        self.idle_s = idle_s
        self.max_s = max_s

    def cookie_value(self, session: Session) -> str:
        return self._signer.dumps(session.sid)

    def from_cookie(self, value: str | None) -> Session | None:
        """The live session the cookie names, or None (no cookie, bad signature, expired)."""
        if not value:
            return None
        try:
            sid = self._signer.loads(value, max_age=int(self.max_s))
        except BadSignature:
            return None
        session = self._sessions.get(str(sid))
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle_s or now - session.created > self.max_s:
            self._sessions.pop(session.sid, None)
            return None
        session.seen = now
        return session

    def new(self) -> Session:
        self._sweep()
        if len(self._sessions) >= MAX_SESSIONS:
            anonymous = sorted((s for s in self._sessions.values() if not s.signed_in), key=lambda s: s.seen)
            for old in anonymous[: len(self._sessions) - MAX_SESSIONS + 1]:
                del self._sessions[old.sid]
        session = Session(sid=secrets.token_urlsafe(32))
        self._sessions[session.sid] = session
        return session

    def renew(self, old: Session) -> Session:
        """A new id (and CSRF token) for a session changing hands: at sign-in."""
        self._sessions.pop(old.sid, None)
        session = self.new()
        session.lang, session.lang_chosen = old.lang, old.lang_chosen
        return session

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid, session in list(self._sessions.items()):
            if now - session.seen > self.idle_s or now - session.created > self.max_s:
                del self._sessions[sid]

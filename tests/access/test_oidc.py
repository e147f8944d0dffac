"""OpenID Connect bearer tokens, verified locally against a JWKS served by a real HTTP server:
the right key, issuer, audience and an unexpired token pass; anything else is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.embedded import free_port
from tests.access.support import add_person, build_app, migrate

ISSUER = "https://id.agency.test"


def _key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, public | {"kid": kid, "use": "sig", "alg": "RS256"}


class Provider:
    """The identity provider's key set, served over HTTP; keys can be rotated."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0
        self.rotate("k1")
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": provider.published}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self, kid: str) -> None:
        private, public = _key(kid)
        self.keys[kid] = private
        self.published.append(public)

    def token(self, kid: str = "k1", *, key: Any = None, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": "clientflow",
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "email": "maria@agency.example",
            "clientflow_role": "finance",
        } | claims
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, key if key is not None else self.keys[kid], algorithm=algorithm, headers={"kid": kid}
        )


@pytest.fixture
def provider() -> Iterator[Provider]:
    served = Provider()
    yield served
    served.server.shutdown()


@pytest.fixture
async def leads(database_url: str, provider: Provider):
    await migrate("leads", database_url)
    app = build_app("leads", database_url, oidc_issuer=ISSUER, oidc_jwks_url=provider.url, oidc_audience="clientflow")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://leads") as http:
        yield app.state.runtime, http
    await app.state.runtime.engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_of_the_provider_acts_with_its_role(leads, provider: Provider) -> None:
    _, http = leads
    me = await http.get("/me", headers=bearer(provider.token()))
    assert me.status_code == 200, me.text
    assert (
        me.json()["actor"] == {"kind": "person", "id": "oidc:user-1", "role": "finance"} and me.json()["via"] == "oidc"
    )
    assert (await http.get("/leads", headers=bearer(provider.token()))).status_code == 200  # finance reads leads
    assert (await http.post("/leads", json={}, headers=bearer(provider.token()))).status_code == 403
    listed = await http.get("/me", headers=bearer(provider.token(clientflow_role=["nobody", "viewer"])))
    assert listed.json()["actor"]["role"] == "viewer"


async def test_forged_foreign_and_stale_tokens_are_refused(leads, provider: Provider) -> None:
    _, http = leads
    stranger, _ = _key("k1")
    public_pem = (
        provider.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": "clientflow", "sub": "x", "exp": int(time.time()) + 60, "clientflow_role": "admin"},
        None,
        algorithm="none",
    )
    forged = {
        "another key": provider.token(key=stranger),
        "alg none": unsigned,
        "HS256 with the public key": _hs256(public_pem),
        "wrong issuer": provider.token(iss="https://evil.example"),
        "wrong audience": provider.token(aud="another-app"),
        "expired": provider.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "no role": provider.token(clientflow_role=None),
        "unknown key id": provider.token(kid="k9", key=stranger),
    }
    answers = {name: await http.get("/me", headers=bearer(token)) for name, token in forged.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(forged, 401)
    assert answers["expired"].json()["detail"] == "token expired"
    assert "issuer" in answers["wrong issuer"].json()["detail"]
    assert "audience" in answers["wrong audience"].json()["detail"]


def _hs256(secret: bytes) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(
        json.dumps(
            {"iss": ISSUER, "aud": "clientflow", "sub": "x", "exp": int(time.time()) + 60, "clientflow_role": "admin"}
        ).encode()
    )
    signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


async def test_a_rotated_key_is_fetched_and_a_disabled_person_stays_out(leads, provider: Provider) -> None:
    runtime, http = leads
    assert (await http.get("/me", headers=bearer(provider.token()))).status_code == 200
    provider.rotate("k2")
    runtime.authenticator.oidc.refresh_s = 0  # the provider rotated: a new key id is looked up at once
    assert (await http.get("/me", headers=bearer(provider.token("k2", sub="user-2")))).status_code == 200
    # Known in the registry by e-mail: acts under the person's id, and not at all once disabled.
    person_id, _ = await add_person(runtime.uow.sessions, "sales", active=False)
    async with runtime.uow.sessions() as session:
        from shared.db import AccessPerson

        email = (await session.get(AccessPerson, person_id)).email
    refused = await http.get("/me", headers=bearer(provider.token(sub="user-3", email=email)))
    assert refused.status_code == 401 and refused.json()["detail"] == "person disabled"


def test_settings_refuse_symmetric_or_none_algorithms() -> None:
    from services.leads.settings import Settings

    for algorithms in (["none"], ["HS256"]):
        with pytest.raises(ValueError, match="asymmetric"):
            Settings(oidc_issuer=ISSUER, oidc_jwks_url="http://x/jwks", oidc_algorithms=algorithms)
    with pytest.raises(ValueError, match="both"):
        Settings(oidc_issuer=ISSUER)

"""Sign-in through the OpenID Connect provider: authorization code flow with PKCE; the code is
exchanged for a token (httpx), which the services then accept and tell who it is."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient

from console.app import create_app
from tests.console.fakes import Services, me, settings

OIDC = {
    "oidc_authorize_url": "https://idp.test/authorize",
    "oidc_token_url": "https://idp.test/token",
    "oidc_client_id": "clientflow-console",
    "oidc_client_secret": "s3cret",
    "public_url": "https://console.agency.example",
}


def client_with_provider(services: Services, exchanges: list[dict[str, str]]) -> TestClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp.test":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            exchanges.append(form | {"authorization": request.headers.get("authorization", "")})
            if form.get("code") != "good-code":
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(200, json={"access_token": "oidc-access-token", "token_type": "Bearer"})
        return services.handler(request)

    app = create_app(settings(**OIDC), transport=httpx.MockTransport(handler))
    return TestClient(app, base_url="http://console.test", follow_redirects=False)


def test_the_code_flow_signs_in_with_the_providers_token() -> None:
    services = Services(tokens={"oidc-access-token": me("success", name="Olu")})
    exchanges: list[dict[str, str]] = []
    with client_with_provider(services, exchanges) as client:
        assert "/login/oidc" in client.get("/login").text
        start = client.get("/login/oidc")
        assert start.status_code == 302
        target = urlsplit(start.headers["location"])
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        assert f"{target.scheme}://{target.netloc}{target.path}" == OIDC["oidc_authorize_url"]
        assert query["response_type"] == "code" and query["client_id"] == "clientflow-console"
        assert query["redirect_uri"] == "https://console.agency.example/login/oidc/callback"
        assert query["code_challenge_method"] == "S256" and query["state"]

        # A callback with another state is refused, and ends the attempt.
        assert client.get("/login/oidc/callback", params={"code": "good-code", "state": "forged"}).status_code == 400
        assert exchanges == []

        start = client.get("/login/oidc")
        query = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
        back = client.get("/login/oidc/callback", params={"code": "good-code", "state": query["state"]})
        assert back.status_code == 303 and back.headers["location"] == "/pipeline"
        (exchange,) = exchanges
        assert exchange["grant_type"] == "authorization_code" and exchange["code"] == "good-code"
        verifier = exchange["code_verifier"]
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        assert challenge == query["code_challenge"]
        assert exchange["authorization"].startswith("Basic ")
        assert "Olu" in client.get("/pipeline").text
    # The services were asked with the provider's token.
    assert any(c[2] == "/me" and c[3] == "oidc-access-token" for c in services.calls)


def test_a_code_the_provider_refuses_is_a_message() -> None:
    exchanges: list[dict[str, str]] = []
    with client_with_provider(Services(), exchanges) as client:
        start = client.get("/login/oidc")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        back = client.get("/login/oidc/callback", params={"code": "bad", "state": state})
        assert back.status_code == 401 and "gave no token" in back.text
        assert client.get("/login/oidc/callback", params={"error": "access_denied"}).status_code == 401


def test_without_the_provider_set_up_there_is_no_such_sign_in() -> None:
    from tests.console.fakes import console

    with console(Services()) as client:
        assert "/login/oidc" not in client.get("/login").text
        assert client.get("/login/oidc").status_code == 404

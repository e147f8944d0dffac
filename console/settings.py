"""The console's settings: ``CONSOLE_...`` plus the shared names it needs (``CLIENTFLOW_ENV``,
``CLIENTFLOW_DATA_DIR``, ``CLIENTFLOW_SECRET_KEY``). Like the services' settings
(shared/settings.py): pydantic-settings, and no default secret outside development."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import DEV_SECRET

SERVICES = ("leads", "nurture", "billing", "retention")


def _shared(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Where the console listens, where the four services are, how sessions and sign-in work."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = Field(
        default="development", validation_alias=_shared("CLIENTFLOW_ENV")
    )
    data_dir: Path = Field(default=Path(".clientflow"), validation_alias=_shared("CLIENTFLOW_DATA_DIR"))
    # Signs the session cookie (CONSOLE_SECRET_KEY, else the system's CLIENTFLOW_SECRET_KEY).
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET), validation_alias=AliasChoices("CONSOLE_SECRET_KEY", "CLIENTFLOW_SECRET_KEY")
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # The services' public HTTP APIs (`clientflow run` sets these to where they really listen).
    leads_url: str = "http://127.0.0.1:8001"
    nurture_url: str = "http://127.0.0.1:8002"
    billing_url: str = "http://127.0.0.1:8003"
    retention_url: str = "http://127.0.0.1:8004"
    # A page asks each service once, at the same time; one that does not answer within this is
    # shown as down and the rest of the page still renders.
    service_timeout_s: float = Field(default=5.0, gt=0, le=60)

    session_idle_s: int = Field(default=8 * 3600, ge=60, description="a session unused this long is signed out")
    session_max_s: int = Field(default=7 * 24 * 3600, ge=60, description="a session this old is signed out")
    # Secure cookies everywhere but development (plain http://127.0.0.1 there).
    secure_cookies: bool | None = None

    # OpenID Connect sign-in (authorization code flow with PKCE): on when client id and the
    # provider's endpoints are set. The services verify the provider's access token themselves.
    oidc_authorize_url: str = ""
    oidc_token_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = "openid email profile"
    # The address people reach the console at (the redirect URI is <public_url>/login/oidc/callback).
    public_url: str = ""
    # Which token of the provider's answer to present to the services: access_token or id_token.
    oidc_token_field: Literal["access_token", "id_token"] = "access_token"

    @property
    def urls(self) -> dict[str, str]:
        return {name: getattr(self, f"{name}_url").rstrip("/") for name in SERVICES}

    @property
    def cookie_secure(self) -> bool:
        return self.environment != "development" if self.secure_cookies is None else self.secure_cookies

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_client_id and self.oidc_authorize_url and self.oidc_token_url)

    @model_validator(mode="after")
    def _checks(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("CONSOLE_SECRET_KEY (or CLIENTFLOW_SECRET_KEY) must be set outside development")
        if self.oidc_enabled and not self.public_url:
            raise ValueError("OpenID Connect sign-in needs CONSOLE_PUBLIC_URL (for its redirect URI)")
        return self

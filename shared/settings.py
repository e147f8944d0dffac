"""Settings base: every service reads its own prefix (``LEADS_``...) plus the shared names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.crypto import MasterKeys

DEV_API_KEY = "dev-api-key-change-me"
DEV_SECRET = "dev-secret-change-me"


def _shared(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ServiceSettings(BaseSettings):
    """What every service needs. Subclasses set ``service_name``, ``default_port`` and a prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000

    environment: Literal["development", "test", "production"] = Field(
        default="development", validation_alias=_shared("CLIENTFLOW_ENV")
    )
    data_dir: Path = Field(default=Path(".clientflow"), validation_alias=_shared("CLIENTFLOW_DATA_DIR"))
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS"))
    # Tansu (the embedded broker) does not support the idempotent producer; real Kafka does.
    kafka_enable_idempotence: bool = Field(default=False, validation_alias=_shared("KAFKA_ENABLE_IDEMPOTENCE"))
    topic_partitions: int = Field(default=3, ge=1, validation_alias=_shared("CLIENTFLOW_TOPIC_PARTITIONS"))
    api_key: SecretStr = Field(default=SecretStr(DEV_API_KEY), validation_alias=_shared("CLIENTFLOW_API_KEY"))
    secret_key: SecretStr = Field(default=SecretStr(DEV_SECRET), validation_alias=_shared("CLIENTFLOW_SECRET_KEY"))
    clock: Literal["system", "simulated"] = Field(default="system", validation_alias=_shared("CLIENTFLOW_CLOCK"))

    # Access (the same in every service). OpenID Connect is on when issuer and JWKS URL are set.
    oidc_issuer: str = Field(default="", validation_alias=_shared("CLIENTFLOW_OIDC_ISSUER"))
    oidc_jwks_url: str = Field(default="", validation_alias=_shared("CLIENTFLOW_OIDC_JWKS_URL"))
    oidc_audience: str = Field(default="clientflow", validation_alias=_shared("CLIENTFLOW_OIDC_AUDIENCE"))
    oidc_role_claim: str = Field(default="clientflow_role", validation_alias=_shared("CLIENTFLOW_OIDC_ROLE_CLAIM"))
    oidc_algorithms: Annotated[list[str], NoDecode] = Field(
        default=["RS256", "ES256"], validation_alias=_shared("CLIENTFLOW_OIDC_ALGORITHMS")
    )
    protect_metrics: bool = Field(default=False, validation_alias=_shared("CLIENTFLOW_PROTECT_METRICS"))
    auth_lockout_failures: int = Field(default=10, ge=1, validation_alias=_shared("CLIENTFLOW_AUTH_LOCKOUT_FAILURES"))
    auth_lockout_window_s: float = Field(
        default=60.0, gt=0, validation_alias=_shared("CLIENTFLOW_AUTH_LOCKOUT_WINDOW_S")
    )
    auth_lockout_s: float = Field(default=60.0, gt=0, validation_alias=_shared("CLIENTFLOW_AUTH_LOCKOUT_S"))
    # Behind a reverse proxy: the client's address is the first of X-Forwarded-For.
    trust_forwarded_for: bool = Field(default=False, validation_alias=_shared("CLIENTFLOW_TRUST_FORWARDED_FOR"))
    token_cache_s: float = Field(default=1.0, ge=0, le=4, validation_alias=_shared("CLIENTFLOW_TOKEN_CACHE_S"))
    # Crypto-shredding (shared.crypto): the master keys that wrap every person's data key,
    # `id:base64url-32-bytes[,older-id:key...]` (the first wraps, all unwrap). Empty in
    # development: one derived from CLIENTFLOW_SECRET_KEY. The same in every service.
    master_keys: SecretStr = Field(default=SecretStr(""), validation_alias=_shared("CLIENTFLOW_MASTER_KEYS"))
    # How long a consumer waits for a person's key that has not reached it yet before it treats
    # the key as lost (the person as erased).
    key_wait_s: float = Field(default=20.0, gt=0, le=3600, validation_alias=_shared("CLIENTFLOW_KEY_WAIT_S"))

    # Retention of data (docs/design.md, "Retention of data"; the same in every service).
    # Audit rows outlive a year of figures (the retention year, NRR and churn over twelve
    # months) by the month it takes to close and review that year: 400 days. Dead letters wait
    # 30 days on their `.dlq` topics for their cause to be fixed and replayed (the alert fires
    # within minutes). Zero, or more than ten years, is refused at start-up.
    audit_retention_days: int = Field(
        default=400, ge=1, le=3650, validation_alias=_shared("CLIENTFLOW_AUDIT_RETENTION_DAYS")
    )
    dead_letter_retention_days: int = Field(
        default=30, ge=1, le=3650, validation_alias=_shared("CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS")
    )

    # Service-specific, read with the service's prefix (LEADS_DATABASE_URL, LEADS_PORT, ...).
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    group_id: str = ""
    consumer_max_records: int = Field(default=500, ge=1)
    consumer_batch_timeout_ms: int = Field(default=50, ge=1)
    # Tansu makes a joining member wait about half the session timeout: the embedded run and
    # the tests use a short one; real Kafka deployments keep Kafka's usual values.
    consumer_session_timeout_ms: int = Field(
        default=10_000, ge=500, validation_alias=_shared("KAFKA_SESSION_TIMEOUT_MS")
    )
    consumer_heartbeat_interval_ms: int = Field(
        default=3_000, ge=100, validation_alias=_shared("KAFKA_HEARTBEAT_INTERVAL_MS")
    )
    # How long the broker may hold a fetch while no data is there. Kafka answers as soon as data
    # arrives; Tansu waits the whole time, so `clientflow run` gives it a short one.
    consumer_fetch_max_wait_ms: int = Field(default=500, ge=1, validation_alias=_shared("KAFKA_FETCH_MAX_WAIT_MS"))
    # What a consumer reads ahead per partition. aiokafka's 1 MiB on each of a service's 15 or so
    # partitions, held as parsed records while a backlog drains, was 40-60 MB of a service's
    # resident memory; a quarter of it still fills a 500-event batch from three partitions.
    consumer_max_partition_fetch_bytes: int = Field(
        default=262_144, ge=16_384, validation_alias=_shared("KAFKA_MAX_PARTITION_FETCH_BYTES")
    )
    max_attempts: int = Field(default=3, ge=1, description="tries before a failing event is dead-lettered")
    relay_batch_size: int = Field(default=500, ge=1)
    relay_poll_interval_s: float = Field(default=0.5, gt=0)
    # Longer than the producer's own request timeout (15 s): a send cut short here could still
    # be delivered later by the producer, and then be published twice.
    relay_publish_timeout_s: float = Field(default=30.0, gt=0)
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # The HTTP server's limits (slow clients, idle connections, how many at once) and the Host
    # names it answers to (production: the names the service is reached by).
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, validation_alias=_shared("CLIENTFLOW_HTTP_HEADER_TIMEOUT_S")
    )
    http_body_timeout_s: float = Field(default=30.0, gt=0, validation_alias=_shared("CLIENTFLOW_HTTP_BODY_TIMEOUT_S"))
    http_keep_alive_s: int = Field(default=5, ge=1, validation_alias=_shared("CLIENTFLOW_HTTP_KEEP_ALIVE_S"))
    http_max_connections: int = Field(default=1000, ge=10, validation_alias=_shared("CLIENTFLOW_HTTP_MAX_CONNECTIONS"))
    # Writes in progress at once; one more gets 503 with Retry-After at once (overload is refused
    # fast rather than queued until everything is slow). Writes to one SQLite file take turns,
    # so more in flight only wait longer: 16 at ~20 ms each is a 0.3 s queue at most.
    http_max_writes_in_flight: int = Field(
        default=16, ge=1, le=10_000, validation_alias=_shared("CLIENTFLOW_HTTP_MAX_WRITES_IN_FLIGHT")
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default=["*"], validation_alias=_shared("CLIENTFLOW_ALLOWED_HOSTS")
    )
    migrate_on_start: bool = True
    create_topics_on_start: bool = True
    broker_connect_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("oidc_algorithms", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # From the environment: "RS256,ES256" or a JSON list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    def master_key_ring(self) -> MasterKeys:
        """The master keys from CLIENTFLOW_MASTER_KEYS, or the development one."""
        text = self.master_keys.get_secret_value()
        return MasterKeys.parse(text) if text.strip() else MasterKeys.derived(self.secret_key.get_secret_value())

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            path = (self.data_dir / f"{self.service_name}.db").resolve()
            self.database_url = f"sqlite+aiosqlite:///{path}"
        if not self.port:
            self.port = self.default_port
        if not self.group_id:
            self.group_id = self.service_name
        if bool(self.oidc_issuer) != bool(self.oidc_jwks_url):
            raise ValueError("OpenID Connect needs both CLIENTFLOW_OIDC_ISSUER and CLIENTFLOW_OIDC_JWKS_URL")
        if {a.lower() for a in self.oidc_algorithms} & {"none"} or any(
            a.startswith("HS") for a in self.oidc_algorithms
        ):
            raise ValueError("CLIENTFLOW_OIDC_ALGORITHMS takes asymmetric algorithms only (RS256, ES256, ...)")
        if self.environment == "production":
            if self.api_key.get_secret_value() == DEV_API_KEY:
                raise ValueError("CLIENTFLOW_API_KEY must be set outside development")
            if self.secret_key.get_secret_value() == DEV_SECRET:
                raise ValueError("CLIENTFLOW_SECRET_KEY must be set outside development")
            if not self.master_keys.get_secret_value():
                raise ValueError("CLIENTFLOW_MASTER_KEYS must be set outside development")
        self.master_key_ring()  # a malformed CLIENTFLOW_MASTER_KEYS is refused at start-up
        return self

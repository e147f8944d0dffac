from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

HERE = Path(__file__).parent


DEV_MAIL_WEBHOOK_SECRET = "dev-mail-webhook-secret-change-me"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore", populate_by_name=True)
    service_name: ClassVar[str] = "nurture"
    default_port: ClassVar[int] = 8002

    sequences_dir: Path = Field(default=HERE / "sequences", description="sequence definitions (*.yaml)")
    templates_dir: Path = Field(default=HERE / "templates", description="email templates (Jinja2)")
    default_language: str = Field(default="en", description="templates fall back to this language")

    send_interval_s: float = Field(default=0.5, gt=0, description="how often the sender looks for due steps")
    send_batch_size: int = Field(default=50, ge=1, description="due steps claimed per pass")
    send_lease_s: float = Field(
        default=120.0, gt=0, description="a claimed step another instance may retry after this (business time)"
    )

    brand_name: str = "Clientflow"
    mail_from: str = Field(default="Clientflow <hello@clientflow.example>", description="From header")
    public_url: str = Field(default="http://127.0.0.1:8002", description="base of public links (unsubscribe)")

    # Sending policy (DESIGN.md: these are settings, not constants in code).
    marketing_cap_per_week: int = Field(
        default=3, ge=1, description="most marketing emails per person in any 7 days, across sequences"
    )
    quiet_hours_start: int = Field(default=21, ge=0, le=23, description="local hour scheduled emails stop")
    quiet_hours_end: int = Field(default=8, ge=0, le=23, description="local hour they resume (= start: off)")
    sales_ready_threshold: int = Field(default=50, ge=1, le=100, description="engagement that makes a lead sales-ready")
    retry_base_s: float = Field(default=60.0, gt=0, description="first wait after a failed send (business time)")
    retry_max_s: float = Field(default=3600.0, gt=0, description="longest wait between send attempts")
    max_send_attempts: int = Field(default=8, ge=1, description="sends tried before a step is marked failed")
    payment_update_url: str = Field(
        default="https://billing.clientflow.example/update-card", description="where a client updates a card"
    )
    booking_url: str = Field(default="https://clientflow.example/book", description="link to book a call")

    # SMTP is used when a host is set; otherwise messages are files under data_dir/mail/nurture.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=True, description="upgrade the connection with STARTTLS")
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    # The mail provider signs its bounce and inbound webhooks with it (Clientflow-Signature).
    webhook_secret: SecretStr = Field(default=SecretStr(DEV_MAIL_WEBHOOK_SECRET))
    webhook_tolerance_s: int = Field(default=300, ge=1, description="oldest (or most future) signed timestamp accepted")

    @model_validator(mode="after")
    def _mail_webhook_secret(self) -> "Settings":
        if self.environment == "production" and self.webhook_secret.get_secret_value() == DEV_MAIL_WEBHOOK_SECRET:
            raise ValueError("NURTURE_WEBHOOK_SECRET must be set outside development")
        return self

"""Nurture's settings: ``NURTURE_``-prefixed, plus the shared names of ``shared.settings``.

The business policies (docs/design.md, "Business rules": where the numbers are defaults, they
are settings, not constants in code) are nested groups: ``settings.sending``,
``settings.retry``, ``settings.engagement``, ``settings.tasks`` and ``settings.takeover`` are
what the rules read. Each group reads the
same flat environment variables as before (``NURTURE_QUIET_HOURS_START``...), and takes the same
flat keywords (``Settings(quiet_hours_start=0)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.nurture import domain
from shared.settings import ServiceSettings

HERE = Path(__file__).parent


DEV_MAIL_WEBHOOK_SECRET = "dev-mail-webhook-secret-change-me"


class PolicyGroup(BaseSettings):
    """A group of policy settings read from the service's own flat variables (a nested model
    that is itself a settings class, so ``NURTURE_QUIET_HOURS_START`` keeps its name)."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore", frozen=True)


class SendingPolicy(PolicyGroup):
    """When a due step may go: quiet hours in the person's time zone, and the cap on marketing
    emails across sequences (``domain.SendingPolicy``)."""

    marketing_cap_per_week: int = Field(
        default=3, ge=1, description="most marketing emails per person in any cap window, across sequences"
    )
    marketing_cap_window_days: float = Field(
        default=domain.CAP_WINDOW.days, gt=0, description="the window the cap counts in (a week)"
    )
    quiet_hours_start: int = Field(default=21, ge=0, le=23, description="local hour scheduled emails stop")
    quiet_hours_end: int = Field(default=8, ge=0, le=23, description="local hour they resume (= start: off)")

    @property
    def quiet(self) -> domain.QuietHours:
        return domain.QuietHours(self.quiet_hours_start, self.quiet_hours_end)

    @property
    def cap(self) -> int:
        return self.marketing_cap_per_week

    @property
    def cap_window(self) -> timedelta:
        return timedelta(days=self.marketing_cap_window_days)


class RetryPolicy(PolicyGroup):
    """How a send the transport refused is retried (``domain.RetryPolicy``)."""

    retry_base_s: float = Field(default=60.0, gt=0, description="first wait after a failed send (business time)")
    retry_max_s: float = Field(default=3600.0, gt=0, description="longest wait between send attempts")
    max_send_attempts: int = Field(default=8, ge=1, description="sends tried before a step is marked failed")

    @property
    def base(self) -> timedelta:
        return timedelta(seconds=self.retry_base_s)

    @property
    def ceiling(self) -> timedelta:
        return timedelta(seconds=self.retry_max_s)

    @property
    def max_attempts(self) -> int:
        return self.max_send_attempts


class EngagementPolicy(PolicyGroup):
    """The one engagement score: what each signal adds, how fast it fades, and when it makes a
    lead sales-ready (``domain.EngagementPolicy``)."""

    sales_ready_threshold: int = Field(
        default=domain.SALES_READY_THRESHOLD, ge=1, le=100, description="engagement that makes a lead sales-ready"
    )
    engagement_open_points: int = Field(default=domain.POINTS["open"], ge=0, le=100, description="an email opened")
    engagement_click_points: int = Field(default=domain.POINTS["click"], ge=0, le=100, description="a link followed")
    engagement_reply_points: int = Field(default=domain.POINTS["reply"], ge=0, le=100, description="a reply")
    engagement_feedback_points: int = Field(
        default=domain.POINTS["feedback"], ge=0, le=100, description="a survey answered"
    )
    engagement_half_life_days: float = Field(
        default=domain.HALF_LIFE.days, gt=0, description="the score halves after this long without a signal"
    )

    @property
    def points(self) -> Mapping[str, int]:
        return {
            "open": self.engagement_open_points,
            "click": self.engagement_click_points,
            "reply": self.engagement_reply_points,
            "feedback": self.engagement_feedback_points,
        }

    @property
    def half_life(self) -> timedelta:
        return timedelta(days=self.engagement_half_life_days)


class TaskPolicy(PolicyGroup):
    """When a task nurture raises is due: hours on the business clock from when it is raised
    (``domain.TaskPolicy``). Tasks other services raise carry their own due date."""

    tasks_reply_due_hours: float = Field(
        default=domain.DUE_HOURS["reply"], gt=0, description="a high-value person's reply, answered"
    )
    tasks_complaint_due_hours: float = Field(
        default=domain.DUE_HOURS["complaint"], gt=0, description="a complaint, called back"
    )
    tasks_churn_risk_due_hours: float = Field(
        default=domain.DUE_HOURS["churn_risk"], gt=0, description="a churn risk, a check-in with the client"
    )
    tasks_dunning_due_hours: float = Field(
        default=domain.DUE_HOURS["dunning_blocked"], gt=0, description="a client blocked by dunning, called"
    )
    tasks_let_go_due_hours: float = Field(
        default=domain.DUE_HOURS["let_go_review"], gt=0, description="a client moved to tier fire, reviewed"
    )
    tasks_hours_underused_due_hours: float = Field(
        default=domain.DUE_HOURS["hours_underused"],
        gt=0,
        description="included hours left unused two months running, planned with the client",
    )

    def due_in(self, kind: str) -> timedelta:
        hours = {
            "reply": self.tasks_reply_due_hours,
            "complaint": self.tasks_complaint_due_hours,
            "churn_risk": self.tasks_churn_risk_due_hours,
            "dunning_blocked": self.tasks_dunning_due_hours,
            "let_go_review": self.tasks_let_go_due_hours,
            "hours_underused": self.tasks_hours_underused_due_hours,
        }
        return domain.TaskDue(hours).due_in(kind)


class TakeoverPolicy(PolicyGroup):
    """How long a takeover an inbound reply started lasts before it ends by itself (business
    days: Monday to Friday on the business clock), and how often the pass looks."""

    takeover_reply_days: int = Field(
        default=domain.REPLY_DAYS, ge=1, le=60, description="business days a reply's takeover lasts unless extended"
    )
    takeover_interval_s: float = Field(
        default=60.0, gt=0, description="how often takeovers are looked at (also on every business-clock jump)"
    )

    @property
    def reply_days(self) -> int:
        return self.takeover_reply_days


# The nested groups, by field name: their flat keywords are moved into them (see ``_groups``).
GROUPS: dict[str, type[PolicyGroup]] = {
    "sending": SendingPolicy,
    "retry": RetryPolicy,
    "engagement": EngagementPolicy,
    "tasks": TaskPolicy,
    "takeover": TakeoverPolicy,
}


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

    # Policies (docs/design.md, "Business rules": these are settings, not constants in code).
    sending: SendingPolicy = Field(default_factory=SendingPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    engagement: EngagementPolicy = Field(default_factory=EngagementPolicy)
    tasks: TaskPolicy = Field(default_factory=TaskPolicy)
    takeover: TakeoverPolicy = Field(default_factory=TakeoverPolicy)

    payment_update_url: str = Field(
        default="https://billing.clientflow.example/update-card", description="where a client updates a card"
    )
    booking_url: str = Field(default="https://clientflow.example/book", description="link to book a call")
    consent_wording_version: str = Field(
        default="2026-01",
        min_length=1,
        max_length=40,
        description="version of the consent wording the forms show (kept with each grant; a capture may name its own)",
    )

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

    @model_validator(mode="before")
    @classmethod
    def _groups(cls, data: Any) -> Any:
        """Flat keywords of a policy (``quiet_hours_start=0``) go into its group, which reads
        the environment for the others: a keyword wins over the environment, as for any field."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, group in GROUPS.items():
            flat = {key: data.pop(key) for key in list(data) if key in group.model_fields}
            if not flat:
                continue
            given = data.get(name)
            if isinstance(given, PolicyGroup):
                given = given.model_dump()
            data[name] = group(**(dict(given or {}) | flat))
        return data

    @model_validator(mode="after")
    def _mail_webhook_secret(self) -> Settings:
        if self.environment == "production" and self.webhook_secret.get_secret_value() == DEV_MAIL_WEBHOOK_SECRET:
            raise ValueError("NURTURE_WEBHOOK_SECRET must be set outside development")
        return self

"""How an email leaves: composed as a standard MIME message, then written to a file (the
default, for development and tests) or handed to an SMTP server (when NURTURE_SMTP_HOST is set).

Each message's Message-ID comes from its ``message_id`` (the scheduled step's id), so a retried
send carries the same Message-ID and receivers can tell it is the same email.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from services.nurture.settings import Settings


class Transport(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


def message_id_header(message_id: uuid.UUID, sender: str) -> str:
    """The Message-ID header of a message: its id at the sender's domain."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "clientflow.local"
    return f"<{message_id}@{domain}>"


class _Headers(HeaderRegistry):
    """The standard header registry, minus the work it repeats for every email: it builds a new
    class per header looked up, and parses headers whose value is the same in every email (From,
    the batch's Date, the parts' Content-Type...). Parsed headers are immutable values (str
    subclasses that serialising only reads), so one can sit in many messages. A large share of
    composing an email went to these two."""

    REPEATED = frozenset(
        {"from", "date", "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe-post"}
    )
    KEPT = 256

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], BaseHeader] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: str) -> BaseHeader:
        # A multipart Content-Type carries the message's own boundary: not worth keeping.
        if name.lower() not in self.REPEATED or value.startswith("multipart/"):
            return self[name](name, value)
        key = (name, value)
        header = self._parsed.get(key)
        if header is None:
            if len(self._parsed) >= self.KEPT:
                self._parsed.clear()
            header = self._parsed[key] = self[name](name, value)
        return header


# RFC 5322 allows 998 characters a line. At the default 78 a long unsubscribe URL would be
# folded as RFC 2047 encoded words, which mail clients do not read in List-Unsubscribe.
POLICY = policy.default.clone(max_line_length=998, header_factory=_Headers())


def compose(
    *,
    message_id: uuid.UUID,
    sender: str,
    to_name: str | None,
    to_address: str,
    subject: str,
    text: str,
    html: str,
    unsubscribe_url: str,
    date: datetime,
) -> EmailMessage:
    """A multipart/alternative email with the headers bulk senders must carry (RFC 8058
    one-click unsubscribe). Raises ValueError for an address that cannot be written."""
    message = EmailMessage(policy=POLICY)
    message["Message-ID"] = message_id_header(message_id, sender)
    message["Date"] = format_datetime(date)
    message["From"] = sender
    local, _, domain = to_address.partition("@")
    if not local or not domain:
        raise ValueError(f"not an email address: {to_address!r}")
    message["To"] = Address(display_name=to_name or "", username=local, domain=domain)
    message["Subject"] = subject
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["X-Clientflow-Message-Id"] = str(message_id)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def _file_name(message: EmailMessage) -> str:
    # The Message-ID's local part is the message_id: one file per message, rewritten by a resend.
    return f"{message['X-Clientflow-Message-Id']!s}.eml"


class FileTransport:
    """Writes one ``<message_id>.eml`` per message into ``directory`` (atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / _file_name(message)
        partial = target.with_suffix(".eml.tmp")
        partial.write_bytes(message.as_bytes())
        os.replace(partial, target)

    async def send(self, message: EmailMessage) -> None:
        # Inline: writing a few kilobytes to a local file (no fsync) takes about 0.1 ms, the
        # hand-off to a thread and back about 2.7 ms, and the sender sends one at a time.
        self._write(message)

    def read(self, message_id: uuid.UUID) -> bytes | None:
        """The stored copy of a message as it went out (an export of the person), if kept."""
        try:
            return (self.directory / f"{message_id}.eml").read_bytes()
        except FileNotFoundError:
            return None

    def forget(self, message_ids: list[uuid.UUID]) -> None:
        """Delete the stored copies of these messages (their person was erased)."""
        for message_id in message_ids:
            for path in (self.directory / f"{message_id}.eml", self.directory / f"{message_id}.eml.tmp"):
                path.unlink(missing_ok=True)


class PermanentFailure(Exception):
    """The server refused the message for good (a 5xx answer, e.g. no such mailbox): retrying
    cannot help, the address bounced."""


class SmtpTransport:
    """Hands each message to an SMTP server (one connection per message, for now)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> None:
        """Raises PermanentFailure for a 5xx refusal; anything else is worth a retry."""
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= code < 600 for code in codes):
                raise PermanentFailure("; ".join(f"{r.code} {r.message}" for r in exc.recipients)) from exc
            raise
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx to the message itself (not to a command the server merely does not know).
            if 550 <= exc.code <= 554:
                raise PermanentFailure(f"{exc.code} {exc.message}") from exc
            raise


def make_transport(settings: Settings) -> Transport:
    """SMTP when ``NURTURE_SMTP_HOST`` is set, else ``.eml`` files under the data directory."""
    if settings.smtp_host:
        return SmtpTransport(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            timeout_s=settings.smtp_timeout_s,
        )
    return FileTransport(settings.data_dir / "mail" / "nurture")

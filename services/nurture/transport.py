"""How an email leaves: composed as a standard MIME message, then written to a file (the
default, for development and tests) or handed to an SMTP server (when NURTURE_SMTP_HOST is set).

Each message's Message-ID comes from its ``message_id`` (the scheduled step's id), so a retried
send carries the same Message-ID and receivers can tell it is the same email.
"""

from __future__ import annotations

import os
import random
import re
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from aiosmtplib.email import extract_recipients, extract_sender

from services.nurture.settings import Settings


class Transport(Protocol):
    async def send(self, message: Mail) -> None: ...


def message_id_header(message_id: uuid.UUID, sender: str) -> str:
    """The Message-ID header of a message: its id at the sender's domain."""
    return f"<{message_id}@{_sender_domain(sender)}>"


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
MAX_LINE = 998
POLICY = policy.default.clone(max_line_length=MAX_LINE, header_factory=_Headers())


def _build(
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
    """The email as the standard library writes it: what ``Mail`` stands for."""
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


class Mail:
    """One composed email: the bytes that go out, and the ``EmailMessage`` they stand for, built
    only when something reads the email as one (SMTP hands it to aiosmtplib)."""

    __slots__ = ("_build", "_message", "message_id", "raw")

    def __init__(self, message_id: uuid.UUID, raw: bytes, build: Callable[[], EmailMessage]) -> None:
        self.message_id = message_id
        self.raw = raw
        self._build = build
        self._message: EmailMessage | None = None

    def as_bytes(self) -> bytes:
        return self.raw

    @property
    def message(self) -> EmailMessage:
        """The same email as an ``EmailMessage`` (its multipart boundary drawn anew)."""
        if self._message is None:
            self._message = self._build()
        return self._message

    def __getitem__(self, name: str) -> Any:
        return self.message[name]


# Writing an email with the standard library took 2-4 ms, nearly all of it parsing and refolding
# headers whose folded form is the value itself. ``compose`` writes the bytes directly when every
# header is such a value and every body line fits; anything else (non-ASCII names or subjects,
# quoted names, odd addresses) is folded by the library, and an email that fits nowhere is
# written by it whole. tests/unit/test_nurture_perf_mail.py checks the bytes are the library's.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")  # printable ASCII words, one space apart
_ATOMS = re.compile(r"[A-Za-z0-9'_-]+(?: [A-Za-z0-9'_-]+)*")  # a name written as is (no specials)
_LOCAL = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*")
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as email.generator draws a boundary


@lru_cache(maxsize=512)
def _folded(name: str, value: str) -> bytes:
    """A header as the library folds it (repeated ones, as a subject, are folded once); a value
    the library refuses (a line break) raises as setting it on a message does."""
    _, header = POLICY.header_store_parse(name, value)
    return POLICY.fold_binary(name, header)


def _header(name: str, value: str) -> bytes:
    line = f"{name}: {value}"
    if len(line) <= MAX_LINE and "=?" not in value and _PLAIN.fullmatch(value):
        return line.encode("ascii") + b"\n"
    return _folded(name, value)


def _date(date: datetime) -> bytes:
    # A pass dates all its emails with its own "now". The offset is part of the key: the same
    # instant in another zone is equal as a datetime but is written differently.
    return _date_line(date, date.utcoffset())


@lru_cache(maxsize=16)
def _date_line(date: datetime, _offset: timedelta | None) -> bytes:
    return _folded("Date", format_datetime(date))


@lru_cache(maxsize=64)
def _sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "clientflow.local"


@lru_cache(maxsize=64)
def _plain_message_ids(domain: str) -> bool:
    """Whether the library writes ``<uuid@domain>`` unchanged (a uuid is plain: any one tells)."""
    probe = f"<{uuid.UUID(int=0)}@{domain}>"
    return _folded("Message-ID", probe) == f"Message-ID: {probe}\n".encode()


def _to(name: str | None, local: str, domain: str) -> bytes:
    if (
        _LOCAL.fullmatch(local)
        and _DOMAIN.fullmatch(domain)
        and (not name or ("=?" not in name and _ATOMS.fullmatch(name)))
        and len(local) + len(domain) + len(name or "") < 900
    ):
        return f"To: {name} <{local}@{domain}>\n".encode() if name else f"To: {local}@{domain}\n".encode()
    address = Address(display_name=name or "", username=local, domain=domain)
    return POLICY.fold_binary("To", POLICY.header_factory("To", address))


def _body(content: str) -> tuple[bytes, bytes] | None:
    """A text part's body and transfer encoding as ``set_content`` writes them, or None when
    a line is too long for 7bit/8bit (the library then picks quoted-printable or base64)."""
    lines = content.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines):
        return None
    body = b"\n".join(lines) + b"\n"
    return body, (b"7bit" if body.isascii() else b"8bit")


def _write(
    *,
    message_id: uuid.UUID,
    sender: str,
    to_name: str | None,
    local: str,
    domain: str,
    subject: str,
    text: str,
    html: str,
    unsubscribe_url: str,
    date: datetime,
) -> bytes | None:
    """The bytes ``_build(...).as_bytes()`` writes (but for the boundary, drawn at random), or
    None when this email needs the library."""
    plain, rich = _body(text), _body(html)
    if plain is None or rich is None:
        return None
    boundary = (f"{'=' * 15}{random.randrange(sys.maxsize):0{_BOUNDARY_DIGITS}d}==").encode()
    if boundary in plain[0] or boundary in rich[0]:
        return None
    sender_domain = _sender_domain(sender)
    message_id_value = f"<{message_id}@{sender_domain}>"
    return b"".join(
        (
            f"Message-ID: {message_id_value}\n".encode()
            if _plain_message_ids(sender_domain)
            else _folded("Message-ID", message_id_value),
            _date(date),
            _folded("From", sender),
            _to(to_name, local, domain),
            _header("Subject", subject),
            _header("List-Unsubscribe", f"<{unsubscribe_url}>"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n",
            _header("X-Clientflow-Message-Id", str(message_id)),
            b'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="',
            boundary,
            b'"\n\n--',
            boundary,
            b'\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: ',
            plain[1],
            b"\n\n",
            plain[0],
            b"\n--",
            boundary,
            b'\nContent-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: ',
            rich[1],
            b"\nMIME-Version: 1.0\n\n",
            rich[0],
            b"\n--",
            boundary,
            b"--\n",
        )
    )


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
) -> Mail:
    """A multipart/alternative email with the headers bulk senders must carry (RFC 8058
    one-click unsubscribe). Raises ValueError for an address that cannot be written."""
    local, _, domain = to_address.partition("@")
    if not local or not domain:
        raise ValueError(f"not an email address: {to_address!r}")
    build = partial(
        _build,
        message_id=message_id,
        sender=sender,
        to_name=to_name,
        to_address=to_address,
        subject=subject,
        text=text,
        html=html,
        unsubscribe_url=unsubscribe_url,
        date=date,
    )
    try:
        raw = _write(
            message_id=message_id,
            sender=sender,
            to_name=to_name,
            local=local,
            domain=domain,
            subject=subject,
            text=text,
            html=html,
            unsubscribe_url=unsubscribe_url,
            date=date,
        )
    except Exception:  # whatever the library refuses (a stray surrogate...), it raises below
        raw = None
    if raw is None:
        message = build()
        return Mail(message_id, message.as_bytes(), lambda: message)
    return Mail(message_id, raw, build)


def _file_name(message: Mail | EmailMessage) -> str:
    # The Message-ID's local part is the message_id: one file per message, rewritten by a resend.
    if isinstance(message, Mail):
        return f"{message.message_id}.eml"
    return f"{message['X-Clientflow-Message-Id']!s}.eml"


class FileTransport:
    """Writes one ``<message_id>.eml`` per message into ``directory`` (atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, message: Mail | EmailMessage) -> None:
        target = self.directory / _file_name(message)
        temporary = target.with_suffix(".eml.tmp")
        raw = message.as_bytes()
        try:
            temporary.write_bytes(raw)
        except FileNotFoundError:  # the first email (or the directory was removed since)
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(raw)
        os.replace(temporary, target)

    async def send(self, message: Mail) -> None:
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

    async def send(self, message: Mail) -> None:
        """Raises PermanentFailure for a 5xx refusal; anything else is worth a retry."""
        # The bytes the file transport writes, not the EmailMessage: aiosmtplib would write that
        # again with a 78-character limit, and a List-Unsubscribe URL (always longer, with no
        # space to fold at) went out as encoded words mail clients ignore: no one-click unsubscribe.
        envelope = message.message
        try:
            await aiosmtplib.send(
                message.raw,
                sender=extract_sender(envelope),
                recipients=extract_recipients(envelope),
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

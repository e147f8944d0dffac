"""Nurture's transports: the file one and SMTP (against a local aiosmtpd server)."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from services.nurture.settings import Settings
from services.nurture.transport import FileTransport, SmtpTransport, compose, make_transport
from shared.embedded import free_port

LONG_UNSUBSCRIBE = "https://clientflow.example/unsubscribe?token=" + "t0k3n" * 20


def message(
    message_id: uuid.UUID,
    *,
    to_name: str = "آدا لاولیس",
    unsubscribe_url: str = "https://clientflow.example/unsubscribe?token=abc",
):
    return compose(
        message_id=message_id,
        sender="Clientflow <hello@clientflow.example>",
        to_name=to_name,
        to_address="ada@analytical.example",
        subject="به Clientflow خوش آمدید",
        text="سلام آدا",
        html="<p dir='rtl'>سلام آدا</p>",
        unsubscribe_url=unsubscribe_url,
        date=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )


async def test_file_transport_writes_one_file_per_message_id(tmp_path: Path) -> None:
    message_id = uuid.uuid4()
    transport = FileTransport(tmp_path / "mail")
    await transport.send(message(message_id))
    await transport.send(message(message_id))  # a resend rewrites the same file
    files = list((tmp_path / "mail").iterdir())
    assert [f.name for f in files] == [f"{message_id}.eml"]
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == f"<{message_id}@clientflow.example>"
    assert parsed["List-Unsubscribe"] == "<https://clientflow.example/unsubscribe?token=abc>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Subject"] == "به Clientflow خوش آمدید"
    assert parsed.get_body(("plain",)).get_content().strip() == "سلام آدا"
    assert "rtl" in parsed.get_body(("html",)).get_content()


class _Inbox:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


async def test_smtp_transport_hands_the_message_to_the_server() -> None:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        message_id = uuid.uuid4()
        sent = message(message_id, unsubscribe_url=LONG_UNSUBSCRIBE)
        await SmtpTransport(host="127.0.0.1", port=port, starttls=False, timeout_s=5).send(sent)
    finally:
        controller.stop()
    (raw,) = inbox.received
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] == f"<{message_id}@clientflow.example>"
    assert parsed["To"].addresses[0].addr_spec == "ada@analytical.example"
    # The one-click unsubscribe header arrives whole (re-folded at 78 characters it became
    # encoded words that mail clients ignore), and the server got the bytes the file holds.
    assert parsed["List-Unsubscribe"] == f"<{LONG_UNSUBSCRIBE}>"
    assert b"=?utf-8?" not in raw.split(b"List-Unsubscribe:")[1].split(b"\n")[0]
    assert raw.replace(b"\r\n", b"\n") == sent.raw.replace(b"\r\n", b"\n")


def test_smtp_is_used_only_when_a_host_is_set(tmp_path: Path) -> None:
    assert isinstance(make_transport(Settings(data_dir=tmp_path)), FileTransport)
    smtp = make_transport(Settings(data_dir=tmp_path, smtp_host="mail.example", smtp_port=2525, smtp_starttls=False))
    assert isinstance(smtp, SmtpTransport) and (smtp.host, smtp.port, smtp.starttls) == ("mail.example", 2525, False)


def test_an_unwritable_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not an email address"):
        compose(
            message_id=uuid.uuid4(),
            sender="a@b.example",
            to_name=None,
            to_address="nobody",
            subject="s",
            text="t",
            html="h",
            unsubscribe_url="https://x.example/u",
            date=datetime(2026, 3, 1, tzinfo=UTC),
        )


def test_a_long_unsubscribe_link_stays_a_plain_url_mail_clients_can_read() -> None:
    """RFC 8058 one-click needs `List-Unsubscribe: <https://...>` as is; folding a long URL at
    78 characters used to turn it into RFC 2047 encoded words, which clients ignore."""
    url = "https://clientflow.example/unsubscribe?token=" + "a1b2c3d4" * 12 + "&m=" + str(uuid.uuid4())
    composed = compose(
        message_id=uuid.uuid4(),
        sender="Clientflow <hello@clientflow.example>",
        to_name="রবীন্দ্রনাথ ঠাকুর",
        to_address="rabi@example.org",
        subject="Clientflow-এ স্বাগতম",
        text="text",
        html="<p>html</p>",
        unsubscribe_url=url,
        date=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )
    raw = composed.as_bytes()
    header = next(line for line in raw.split(b"\n") if line.startswith(b"List-Unsubscribe:"))
    assert header.strip() == f"List-Unsubscribe: <{url}>".encode()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(parsed["To"]).startswith("রবীন্দ্রনাথ ঠাকুর")


def test_headers_shared_between_emails_write_the_same_bytes_as_parsing_each(monkeypatch) -> None:
    """Composing reuses parsed headers that repeat (From, Date, content types) instead of parsing
    them per email; what is written stays what the standard policy writes."""
    import re

    from services.nurture import transport

    def written(count: int) -> list[bytes]:
        names = ["آدا لاولیس", "Ada Lovelace", 'Ada "the first" Lovelace, Countess']
        out = [message(uuid.UUID(int=n), to_name=names[n % len(names)]).as_bytes() for n in range(count)]
        return [re.sub(rb"={15}\d+==", b"BOUNDARY", b) for b in out]  # drawn at random per email

    sender = "Clientflow <hello@clientflow.example>"
    assert transport.POLICY.header_factory("From", sender) is transport.POLICY.header_factory("From", sender)
    shared = written(6)
    monkeypatch.setattr(transport, "POLICY", email.policy.default.clone(max_line_length=998))
    assert shared == written(6)

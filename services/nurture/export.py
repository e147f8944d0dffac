"""Export on request (``export.requested``): nurture's part of everything held about a person,
with the e-mails sent to them as they went out (``services/leads/exports.py`` gathers the rest).

The e-mails come from the mail store when it keeps copies (the file transport); an e-mail it
does not keep (SMTP hands them over and keeps nothing) is rebuilt from its record: headers and
the text body as sent, marked so."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from sqlalchemy import select

from services.nurture.store import (
    ConsentRecord,
    Contact,
    Enrollment,
    Feedback,
    Message,
    Reply,
    ScheduledMessage,
    Takeover,
    Task,
)
from services.nurture.transport import POLICY, message_id_header
from shared.events import ExportMail
from shared.exports import answer, audit_rows, row, rows
from shared.uow import UnitOfWork

ReadMail = Callable[[uuid.UUID], bytes | None]


async def export_person(
    tx: UnitOfWork,
    *,
    export_id: uuid.UUID,
    lead_id: uuid.UUID,
    sender: str,
    read_mail: ReadMail | None = None,
) -> None:
    """Answer an export with what nurture holds about the person: the contact, consent history,
    enrollments and steps, messages sent (and the e-mails themselves), replies, feedback,
    takeovers, tasks about them and the audit trail."""

    async def of(table: Any, *order: Any) -> list[Any]:
        return list(await tx.session.scalars(select(table).where(table.lead_id == lead_id).order_by(*order)))

    contact = await tx.session.get(Contact, lead_id)
    messages = await of(Message, Message.sent_at, Message.message_id)
    part = {
        "contact": row(contact) if contact is not None else None,
        "consent_history": rows(await of(ConsentRecord, ConsentRecord.at)),
        "enrollments": rows(await of(Enrollment, Enrollment.enrolled_at)),
        "steps": rows(await of(ScheduledMessage, ScheduledMessage.due_at, ScheduledMessage.step)),
        "messages": rows(messages),
        "replies": rows(await of(Reply, Reply.received_at)),
        "feedback": rows(await of(Feedback, Feedback.received_at)),
        "takeovers": rows(await of(Takeover, Takeover.started_at)),
        "tasks": rows(await of(Task, Task.created_at)),
        "audit": await audit_rows(tx, lead_id),
    }
    mail = await asyncio.to_thread(_mail, messages, sender, read_mail)
    answer(tx, export_id=export_id, lead_id=lead_id, service="nurture", part=part, mail=mail)


def _mail(messages: list[Message], sender: str, read_mail: ReadMail | None) -> list[ExportMail]:
    """Each e-mail sent, as an .eml file (off the event loop: files are read)."""
    out = []
    for message in messages:
        stored = read_mail(message.message_id) if read_mail is not None else None
        content = stored if stored is not None else _rebuilt(message, sender)
        if content is None:
            continue
        name = f"{message.sent_at:%Y-%m-%dT%H%M%SZ}_{message.template}_{message.message_id}.eml"
        out.append(ExportMail(filename=name, content_base64=base64.b64encode(content).decode()))
    return out


def _rebuilt(message: Message, sender: str) -> bytes | None:
    """An e-mail the mail store does not keep, from its record (None: its person was erased)."""
    if message.to_address is None or message.body_text is None:
        return None
    email = EmailMessage(policy=POLICY)
    email["Message-ID"] = message_id_header(message.message_id, sender)
    email["Date"] = format_datetime(message.sent_at)
    email["From"] = sender
    local, _, domain = message.to_address.partition("@")
    email["To"] = Address(username=local, domain=domain) if domain else message.to_address
    email["Subject"] = message.subject or ""
    email["X-Clientflow-Message-Id"] = str(message.message_id)
    email["X-Clientflow-Export"] = "rebuilt from the record: the mail store keeps no copy (text part only)"
    email.set_content(message.body_text)
    return email.as_bytes()

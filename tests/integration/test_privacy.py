"""Erasure plumbing (shared.privacy.forget_person) on a real database (PostgreSQL when
TEST_DATABASE_URL is set, else SQLite), and the nurture mail store forgetting an erased
person's messages."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from services.nurture.transport import FileTransport
from shared.clock import Clock
from shared.db import IdempotencyKeyRow, OutboxRow, PlumbingBase, create_engine
from shared.privacy import WITHHELD, forget_person
from shared.uow import UnitOfWorkFactory

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, tzinfo=UTC)


class Fixed(Clock):
    def now(self) -> datetime:
        return NOW


def outbox(key: str | None, *, sent: bool) -> OutboxRow:
    return OutboxRow(
        event_id=uuid.uuid4(),
        topic="leads",
        event_type="lead.captured",
        key=key.encode() if key else None,
        payload=json.dumps({"data": {"name": "Ada Quill"}}).encode(),
        created_at=NOW,
        sent_at=NOW if sent else None,
    )


def answer(key: str, path: str, body: dict, state: str = "done") -> IdempotencyKeyRow:
    raw = json.dumps(body).encode()
    return IdempotencyKeyRow(
        key=key,
        method="POST",
        path=path,
        request_hash="h",
        state=state,
        status_code=201,
        response_body=raw,
        response_headers={"content-type": "application/json", "content-length": str(len(raw))},
        created_at=NOW,
    )


async def test_forget_person_drops_sent_outbox_rows_and_withholds_answers(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(PlumbingBase.metadata.create_all)
        person, other = uuid.uuid4(), uuid.uuid4()
        uow = UnitOfWorkFactory(engine, producer="test", clock=Fixed())
        async with uow() as tx:
            tx.session.add_all(
                [
                    outbox(str(person), sent=True),
                    outbox(str(person), sent=False),
                    outbox(str(other), sent=True),
                    outbox(None, sent=True),
                    answer("k1", "/leads", {"lead_id": str(person), "name": "Ada Quill"}),
                    answer("k2", f"/clients/{person}/cancellation", {"comment": "Ada Quill leaves"}),
                    answer("k3", "/leads", {"lead_id": str(other), "name": "Bo"}),
                    answer("k4", "/leads", {"lead_id": str(person)}, state="in_progress"),
                ]
            )
        async with uow() as tx:
            await forget_person(tx, person)
        async with uow() as tx:
            rows = list(await tx.session.scalars(select(OutboxRow)))
            answers = {row.key: row for row in await tx.session.scalars(select(IdempotencyKeyRow))}
        # The unsent row is still to be published; other people's rows stay.
        assert sorted((r.key or b"", r.sent_at is not None) for r in rows) == sorted(
            [(str(person).encode(), False), (str(other).encode(), True), (b"", True)]
        )
        assert answers["k1"].response_body == answers["k2"].response_body == WITHHELD
        assert answers["k1"].response_headers["content-length"] == str(len(WITHHELD))
        assert answers["k1"].status_code == 201  # a repeat is still answered, not done again
        assert b"Bo" in answers["k3"].response_body
        assert answers["k4"].state == "in_progress" and str(person).encode() in answers["k4"].response_body
        async with uow() as tx:
            await forget_person(tx, person)  # again: nothing more to do, nothing breaks
    finally:
        await engine.dispose()


def test_file_transport_forgets_messages(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "mail")
    kept, gone = uuid.uuid4(), uuid.uuid4()
    for message_id in (kept, gone):
        message = EmailMessage()
        message["X-Clientflow-Message-Id"] = str(message_id)
        message.set_content("hello")
        transport._write(message)
    transport.forget([gone, uuid.uuid4()])  # one never written: no error
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == [f"{kept}.eml"]

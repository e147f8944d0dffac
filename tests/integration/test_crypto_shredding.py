"""Crypto-shredding on a real broker and a real database, from a consumer's side (nurture): a
sealed event that arrives before its key waits for the key and is then applied with the
person's real values; a key lost on this service only (its row deleted) is taken as the person's
erasure after ``CLIENTFLOW_KEY_WAIT_S``: the event is applied without the personal fields, the
person is erased here, nothing is dead-lettered, and the consumer goes on with the next people."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, select

from services.nurture.app import MIGRATIONS, create_app
from services.nurture.settings import Settings
from services.nurture.store import Contact
from shared import events as ev
from shared import topics
from shared.crypto import PersonKeyRow, seal
from shared.db import StateRow, create_engine
from shared.events import make_event
from shared.migrations import upgrade_async
from tests.integration.test_nurture_sequences import settings_for
from tests.integration.test_nurture_service import ManualClock, captured
from tests.support import eventually, producer, publish, run_service

pytestmark = pytest.mark.integration

T0 = datetime(2031, 6, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> Settings:
    # A short wait for a key that never comes, and a group of its own (other tests' leftovers).
    return settings_for(
        kafka_bootstrap, database_url, tmp_path, key_wait_s=3.0, group_id=f"nurture-shred-{uuid.uuid4().hex[:6]}"
    )


def sealed_capture(lead_id: uuid.UUID, key_id: str, data_key: bytes, payload: ev.LeadCaptured) -> ev.Envelope:
    event = make_event("lead.captured", payload, producer="leads", occurred_at=T0, lead_id=lead_id)
    return seal(event, key_id, data_key)


def key_event(lead_id: uuid.UUID, key_id: str, data_key: bytes, settings: Settings) -> ev.Envelope:
    kek_id, wrapped = settings.master_key_ring().wrap(key_id, data_key)
    created = ev.PersonKeyCreated(key_id=key_id, subject_id=lead_id, kek_id=kek_id, wrapped=wrapped, created_at=T0)
    return make_event("person_key.created", created, producer="leads", occurred_at=T0)


async def contact(svc, lead_id: uuid.UUID) -> Contact | None:
    async with svc.runtime.uow.sessions() as session:
        return await session.scalar(select(Contact).where(Contact.lead_id == lead_id))


async def dead_letters_about(bootstrap: str, lead_id: uuid.UUID) -> int:
    consumer = AIOKafkaConsumer(
        topics.dlq(topics.LEADS), bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1500)
        return sum(r.key == str(lead_id).encode() for records in batches.values() for r in records)
    finally:
        await consumer.stop()


async def test_a_sealed_event_waits_for_its_key_and_a_lost_key_is_an_erasure(
    settings: Settings, kafka_bootstrap: str
) -> None:
    app = create_app(settings, clock=ManualClock(T0))
    async with run_service(app, settings.port) as nurture, producer(kafka_bootstrap) as kafka:
        metrics = nurture.runtime.metrics.registry

        # 1. The event comes first, its key a moment later: applied with the real values.
        early = uuid.uuid4()
        early_key = (f"pk_{uuid.uuid4().hex}", AESGCM.generate_key(bit_length=256))
        person = captured()
        await publish(kafka, sealed_capture(early, *early_key, person))
        await asyncio.sleep(0.3)  # within the grace a key published just after its event gets
        await publish(kafka, key_event(early, *early_key, settings))
        found = await eventually(lambda: contact(nurture, early), timeout=30)
        assert found.name == "Ada Lovelace" and found.email == person.email and found.erased_at is None
        waits = metrics.get_sample_value("clientflow_key_waits_total", {"service": "nurture"}) or 0
        assert waits >= 1

        # 2. A key lost here only (its row deleted): the next event sealed with it is taken as
        # the person's erasure once the wait is over, applied, and not dead-lettered.
        lost = uuid.uuid4()
        lost_key = (f"pk_{uuid.uuid4().hex}", AESGCM.generate_key(bit_length=256))
        await publish(kafka, key_event(lost, *lost_key, settings))
        first = captured()
        await publish(kafka, sealed_capture(lost, *lost_key, first))
        known = await eventually(lambda: contact(nurture, lost), timeout=30)
        assert known.email == first.email
        async with nurture.runtime.uow.sessions() as session, session.begin():
            await session.execute(delete(PersonKeyRow).where(PersonKeyRow.key_id == lost_key[0]))
        nurture.runtime.keyring.forget([lost_key[0]], [lost])
        again = first.model_copy(update={"duplicate": True})
        await publish(kafka, sealed_capture(lost, *lost_key, again))

        async def erased() -> Contact | None:
            row = await contact(nurture, lost)
            return row if row is not None and row.erased_at is not None else None

        gone = await eventually(erased, timeout=30)
        assert gone.name is None and gone.email is None
        shredded = metrics.get_sample_value(
            "clientflow_events_shredded_total", {"service": "nurture", "reason": "lost"}
        )
        assert shredded == 1

        # 3. The consumer goes on: the next person is applied as usual.
        after = uuid.uuid4()
        after_key = (f"pk_{uuid.uuid4().hex}", AESGCM.generate_key(bit_length=256))
        await publish(kafka, key_event(after, *after_key, settings))
        await publish(kafka, sealed_capture(after, *after_key, captured()))
        later = await eventually(lambda: contact(nurture, after), timeout=30)
        assert later.name == "Ada Lovelace"
    assert await dead_letters_about(kafka_bootstrap, lost) == 0


async def test_a_store_that_read_further_than_a_restarted_broker_holds_reads_the_keys_again(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """The embedded broker restarts empty while the services keep their stores: a keys fold
    that had reached offset 100,000 reads the topic from its start again, so new people's keys
    are found (and nobody is taken for erased)."""
    await upgrade_async(MIGRATIONS, settings.database_url)
    engine = create_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            insert(StateRow.__table__).values(name="keys.offsets", value='{"0": 100000, "1": 100000, "2": 100000}')
        )
    await engine.dispose()
    app = create_app(settings, clock=ManualClock(T0))
    async with run_service(app, settings.port) as nurture, producer(kafka_bootstrap) as kafka:
        lead = uuid.uuid4()
        key = (f"pk_{uuid.uuid4().hex}", AESGCM.generate_key(bit_length=256))
        await publish(kafka, key_event(lead, *key, settings))
        person = captured()
        await publish(kafka, sealed_capture(lead, *key, person))
        found = await eventually(lambda: contact(nurture, lead), timeout=30)
        assert found.email == person.email and found.erased_at is None
        metrics = nurture.runtime.metrics.registry
        assert not metrics.get_sample_value(
            "clientflow_events_shredded_total", {"service": "nurture", "reason": "lost"}
        )

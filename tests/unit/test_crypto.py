"""Crypto-shredding (shared.crypto): what is sealed, that it opens only with the person's key and
only on the event it was sealed for, that a destroyed key leaves a valid payload without the
person, and the key table's life (made once per person, destroyed for good, wrapped again)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import event as sa_event
from sqlalchemy import select

from shared import events as ev
from shared.clock import SimulatedClock
from shared.crypto import (
    ERASED,
    SEALED,
    KeyRing,
    MasterKeys,
    PersonKeyRow,
    open_sealed,
    seal,
    shred,
)
from shared.db import OutboxRow, PlumbingBase, create_engine
from shared.events import PERSONAL, Envelope, make_event
from shared.uow import UnitOfWorkFactory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEAD = uuid.UUID("2b7e1f0c-5a4d-4b8e-9c1a-0f3d2e6b7a59")


def captured() -> Envelope:
    return make_event(
        "lead.captured",
        ev.LeadCaptured(
            name="Zeynab Haghighi",
            email="zeynab@parsgraph.example",
            company="Pars Graph",
            job_title="Founder",
            channel="website",
            campaign="zeynab-webinar",
            utm={"source": "newsletter"},
            timeline="before Nowruz",
            needs=["seo"],
            budget=Decimal("9000"),
            currency="EUR",
            fit_score=70,
            segment="smb",
        ),
        producer="leads",
        occurred_at=T0,
        lead_id=LEAD,
    )


def won() -> Envelope:
    line = ev.ScopeLine(description="Shop for Pars Graph", hours=Decimal(10), amount=Decimal(1500))
    return make_event(
        "deal.won",
        ev.DealWon(
            deal_id=uuid.uuid4(),
            title="Zeynab's shop",
            kind="project",
            currency="EUR",
            lines=[line, line.model_copy(update={"description": "Zeynab's logo"})],
            total=Decimal(3000),
            signed_by="Zeynab Haghighi",
            signed_at=T0,
            deposit_share=Decimal("0.5"),
            signed_ip="203.0.113.7",
        ),
        producer="leads",
        occurred_at=T0,
        lead_id=LEAD,
    )


def test_personal_fields_leave_the_payload_and_come_back_with_the_key() -> None:
    key = os.urandom(32)
    event = captured()
    sealed = seal(event, "pk_1", key)
    wire = sealed.model_dump_json()
    for value in ("Zeynab", "zeynab@parsgraph.example", "Pars Graph", "Nowruz", "newsletter", "Founder"):
        assert value not in wire
    # The placeholders keep the payload valid for a reader without the key; amounts stay.
    blind = Envelope.model_validate_json(wire).payload()
    assert isinstance(blind, ev.LeadCaptured)
    assert blind.name == SEALED and blind.email is None and blind.utm == {} and blind.needs == []
    assert blind.budget == Decimal("9000") and blind.channel == "website"
    assert sealed.sealed is not None and sealed.sealed.key_id == "pk_1"
    assert sorted(sealed.sealed.fields) == sorted(p for p in PERSONAL["lead.captured"] if p in event.data)
    opened = open_sealed(Envelope.model_validate_json(wire), key)
    assert opened.data == event.data and opened.sealed is None


def test_items_of_a_list_are_sealed_field_by_field_and_amounts_stay() -> None:
    key = os.urandom(32)
    sealed = seal(won(), "pk_2", key)
    lines = sealed.data["lines"]
    assert [line["description"] for line in lines] == [SEALED, SEALED]
    assert [Decimal(line["amount"]) for line in lines] == [Decimal(1500), Decimal(1500)]
    assert sealed.data["signed_by"] == SEALED and sealed.data["signed_ip"] is None
    opened = open_sealed(sealed, key)
    assert [line["description"] for line in opened.data["lines"]] == ["Shop for Pars Graph", "Zeynab's logo"]
    assert opened.data["signed_ip"] == "203.0.113.7"


def test_a_sealed_blob_opens_only_with_its_key_and_only_on_its_own_event() -> None:
    key = os.urandom(32)
    sealed = seal(captured(), "pk_3", key)
    with pytest.raises(InvalidTag):
        open_sealed(sealed, os.urandom(32))
    other = captured()
    moved = other.model_copy(update={"data": sealed.data, "sealed": sealed.sealed})
    with pytest.raises(InvalidTag):
        open_sealed(moved, key)  # the event id is authenticated with the blob


def test_shredded_event_reads_as_erased_and_stays_a_valid_payload() -> None:
    sealed = seal(won(), "pk_4", os.urandom(32))
    gone = shred(sealed)
    payload = gone.payload()
    assert isinstance(payload, ev.DealWon)
    assert gone.shredded and payload.signed_by == ERASED and payload.title == ERASED
    assert payload.total == Decimal(3000) and [line.description for line in payload.lines] == [ERASED, ERASED]


def test_every_personal_path_names_a_field_of_its_type() -> None:
    for event_type, paths in PERSONAL.items():
        model = ev.EVENT_TYPES[event_type].model
        for path in paths:
            assert path.split("[]")[0] in model.model_fields, (event_type, path)


def test_master_keys_parse_and_refuse_what_is_not_a_key() -> None:
    raw = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    keys = MasterKeys.parse(f"k2:{raw}, k1:{base64.urlsafe_b64encode(os.urandom(32)).decode()}")
    assert keys.current_id == "k2" and keys.ids == ["k2", "k1"]
    kek, wrapped = keys.wrap("pk_9", b"x" * 32)
    assert kek == "k2" and keys.unwrap(kek, "pk_9", wrapped) == b"x" * 32
    with pytest.raises(InvalidTag):
        keys.unwrap(kek, "pk_other", wrapped)  # a wrapped key is bound to its id
    for bad in ("nocolon", "k1:" + base64.urlsafe_b64encode(b"short").decode(), "k1:***", ""):
        with pytest.raises(ValueError):
            MasterKeys.parse(bad)


@pytest.fixture
async def uow(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(PlumbingBase.metadata.create_all)
    factory = UnitOfWorkFactory(engine, producer="leads", clock=SimulatedClock(T0))
    factory.keyring = KeyRing(MasterKeys.derived("test-secret"), wait_s=0.0)
    yield factory
    await engine.dispose()


async def outbox(factory: UnitOfWorkFactory) -> list[Envelope]:
    async with factory.sessions() as session:
        rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [Envelope.model_validate_json(row.payload) for row in rows]


async def test_a_person_gets_one_key_announced_before_what_it_seals(uow: UnitOfWorkFactory) -> None:
    payload = captured().payload()
    assert isinstance(payload, ev.LeadCaptured)
    async with uow() as tx:
        tx.emit("lead.captured", payload, lead_id=LEAD)
        tx.emit("lead.erased", ev.LeadErased(requested_at=T0), lead_id=uuid.uuid4())  # nothing personal
    async with uow() as tx:
        tx.emit("lead.captured", payload.model_copy(update={"duplicate": True}), lead_id=LEAD)
    sent = await outbox(uow)
    assert [e.type for e in sent] == ["person_key.created", "lead.captured", "lead.erased", "lead.captured"]
    key_id = sent[0].data["key_id"]
    assert sent[1].sealed is not None and sent[3].sealed is not None
    assert sent[1].sealed.key_id == sent[3].sealed.key_id == key_id  # one key per person
    assert sent[2].sealed is None
    assert "Zeynab" not in json.dumps([e.model_dump(mode="json") for e in sent])
    async with uow.sessions() as session:
        rows = list(await session.scalars(select(PersonKeyRow)))
    assert [(r.key_id, r.subject_id, r.destroyed_at) for r in rows] == [(key_id, LEAD, None)]
    assert rows[0].wrapped is not None and b"Zeynab" not in rows[0].wrapped


async def test_destroyed_keys_stay_destroyed_and_nothing_personal_is_sent_after(uow: UnitOfWorkFactory) -> None:
    payload = captured().payload()
    assert isinstance(payload, ev.LeadCaptured)
    async with uow() as tx:
        first = tx.emit("lead.captured", payload, lead_id=LEAD)
    async with uow() as tx:
        destroyed = await tx.destroy_keys([LEAD])
    async with uow() as tx:
        tx.emit("lead.captured", payload, lead_id=LEAD)
    sent = await outbox(uow)
    assert [e.type for e in sent] == [
        "person_key.created",
        "lead.captured",
        "person_key.destroyed",
        "lead.captured",
    ]
    assert sent[2].data["key_id"] == destroyed[0] == sent[0].data["key_id"]
    # After the erasure no key is made again: the personal fields are dropped, not sealed.
    assert sent[3].sealed is None and sent[3].data["name"] == ERASED and sent[3].data["email"] is None
    ring = uow.keyring
    assert ring is not None
    wire = Envelope.model_validate_json(sent[1].model_dump_json())
    ring.forget([destroyed[0]])
    await ring.load(uow.sessions, [destroyed[0]])
    assert ring.pending([wire]) == set()
    opened = ring.open(wire)
    assert opened.shredded and opened.data["name"] == ERASED and opened.event_id == first.event_id
    async with uow.sessions() as session:
        row = await session.get(PersonKeyRow, destroyed[0])
    assert row is not None and row.wrapped is None and row.destroyed_at is not None


async def test_a_key_never_seen_is_waited_for_then_taken_as_lost(uow: UnitOfWorkFactory) -> None:
    ring = KeyRing(MasterKeys.derived("test-secret"), wait_s=30.0)
    wire = seal(captured(), "pk_unknown", os.urandom(32))
    await ring.load(uow.sessions, ["pk_unknown"])
    assert ring.pending([wire]) == {"pk_unknown"}  # not folded yet: the batch is read again
    ring.wait_s = 0.0
    assert ring.pending([wire]) == set()
    lost = []
    ring._on_missing = lost.append
    opened = ring.open(wire)
    assert opened.shredded and opened.payload().name == ERASED and lost == ["pk_unknown"]


async def test_rotation_wraps_every_live_key_again_with_the_new_master_key(uow: UnitOfWorkFactory) -> None:
    payload = captured().payload()
    assert isinstance(payload, ev.LeadCaptured)
    async with uow() as tx:
        tx.emit("lead.captured", payload, lead_id=LEAD)
    new_raw = base64.urlsafe_b64encode(os.urandom(32)).decode()
    both = MasterKeys([("new", base64.urlsafe_b64decode(new_raw)), ("dev", _dev_raw("test-secret"))])
    uow.keyring = KeyRing(both, wait_s=0.0)
    async with uow() as tx:
        assert await uow.keyring.rewrap(tx) == 1
    async with uow() as tx:
        assert await uow.keyring.rewrap(tx) == 0
    sent = await outbox(uow)
    assert [e.type for e in sent] == ["person_key.created", "lead.captured", "person_key.created"]
    assert sent[2].data["key_id"] == sent[0].data["key_id"] and sent[2].data["kek_id"] == "new"
    # The new master key alone opens what was sealed before the rotation.
    only_new = KeyRing(MasterKeys([("new", base64.urlsafe_b64decode(new_raw))]), wait_s=0.0)
    await only_new.load(uow.sessions, [sent[0].data["key_id"]])
    assert only_new.open(sent[1]).data["name"] == "Zeynab Haghighi"


async def test_a_batch_of_the_keys_topic_folds_in_order_with_one_query_per_500_keys(uow: UnitOfWorkFactory) -> None:
    master = MasterKeys.derived("test-secret")
    ring = KeyRing(master, wait_s=0.0)
    raw = {name: os.urandom(32) for name in ("a", "b", "old")}

    def created(key_id: str, data_key: bytes, subject: uuid.UUID) -> ev.PersonKeyCreated:
        kek_id, wrapped = master.wrap(key_id, data_key)
        return ev.PersonKeyCreated(key_id=key_id, subject_id=subject, kek_id=kek_id, wrapped=wrapped, created_at=T0)

    def destroyed(key_id: str, subject: uuid.UUID) -> ev.PersonKeyDestroyed:
        return ev.PersonKeyDestroyed(key_id=key_id, subject_id=subject, destroyed_at=T0, reason="erasure")

    ada, bob, cy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with uow() as tx:
        await ring.fold(tx, [created("pk_old", raw["old"], cy)])  # folded by an earlier batch
    many = [created(f"pk_many_{n}", os.urandom(32), uuid.uuid4()) for n in range(1200)]
    batch = [
        created("pk_a", os.urandom(32), ada),
        created("pk_b", raw["b"], bob),
        created("pk_a", raw["a"], ada),  # the same key wrapped again (rotation): the last wins
        destroyed("pk_b", bob),  # made and destroyed within one batch
        destroyed("pk_old", cy),
        destroyed("pk_never_seen", uuid.uuid4()),  # a destroyed marker for a key never folded
        *many,
    ]
    selects: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "person_keys" in statement:
            selects.append(statement)

    sync_engine = uow.engine.sync_engine
    sa_event.listen(sync_engine, "before_cursor_execute", count)
    try:
        async with uow() as tx:
            await ring.fold(tx, batch)
    finally:
        sa_event.remove(sync_engine, "before_cursor_execute", count)
    assert len(selects) == 3  # 1,203 key ids, 500 per query

    async with uow.sessions() as session:
        rows = {r.key_id: r for r in await session.scalars(select(PersonKeyRow))}
    assert len(rows) == 4 + len(many)
    assert rows["pk_b"].destroyed_at is not None and rows["pk_b"].wrapped is None
    assert rows["pk_old"].destroyed_at is not None and rows["pk_old"].wrapped is None
    assert rows["pk_never_seen"].destroyed_at is not None
    assert rows["pk_a"].destroyed_at is None
    await ring.load(uow.sessions, ["pk_a", "pk_b", "pk_old", "pk_many_7"])
    assert ring.pending([seal(captured(), "pk_a", raw["a"])]) == set()
    assert ring.open(seal(captured(), "pk_a", raw["a"])).data["name"] == "Zeynab Haghighi"
    assert ring.open(seal(captured(), "pk_b", raw["b"])).shredded
    assert ring.open(seal(captured(), "pk_old", raw["old"])).shredded


def _dev_raw(secret: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"clientflow-master-key", info=b"dev").derive(
        secret.encode()
    )


def test_the_key_cache_keeps_a_bounded_number_of_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.crypto.MAX_CACHED", 50)
    master = MasterKeys.derived("test-secret")
    ring = KeyRing(master, wait_s=0.0)
    for n in range(200):
        key_id = f"pk_{n:04d}"
        kek, wrapped = master.wrap(key_id, os.urandom(32))
        row = PersonKeyRow(key_id=key_id, subject_id=uuid.uuid4(), kek_id=kek, wrapped=wrapped.encode(), created_at=T0)
        ring._remember(row)
    assert len(ring._by_id) == 50 and "pk_0199" in ring._by_id and "pk_0000" not in ring._by_id

"""Leads' faster paths give what the slower ones gave: insert-only rows (services/leads/rows.py)
leave exactly the rows the ORM's own flush leaves, in the same order, in a few multi-row
INSERTs; a capture's dedupe candidates read in one query are the two queries' answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from services.leads import domain, record
from services.leads.rows import LeadsSession
from services.leads.store import Activity, Base, Lead, LeadRedFlag, StageChange, Touch
from shared.clock import SimulatedClock
from shared.db import PlumbingBase
from shared.uow import UnitOfWorkFactory

AT = datetime(2026, 3, 2, 9, tzinfo=UTC)
LEAD_IDS = [uuid.UUID(int=n) for n in range(1, 4)]


def _engine() -> Engine:
    engine = create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def _fks(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA foreign_keys=ON")

    Base.metadata.create_all(engine)
    return engine


def _lead(lead_id: uuid.UUID, n: int) -> Lead:
    return Lead(
        id=lead_id,
        email=f"p{n}@example.com",
        email_key=f"p{n}@example.com",
        name=f"Person {n}",
        channel="web",
        stage="awareness",
        fit_score=10,
        engagement_score=0,
        referrals=0,
        created_at=AT,
        updated_at=AT,
    )


def _work(session: Session) -> None:
    """Captures, touches, stage moves, flags and timeline entries, interleaved, with flushes
    between (a query's autoflush), some with nothing but insert-only rows pending."""
    session.add(_lead(LEAD_IDS[0], 0))
    for n, lead_id in enumerate(LEAD_IDS[1:], start=1):
        session.add(Touch(lead_id=LEAD_IDS[0], channel="web", campaign=None, utm=None, at=AT))
        session.add(StageChange(lead_id=LEAD_IDS[0], from_stage=None, to_stage="awareness", cause="c", at=AT))
        session.add(Activity(lead_id=LEAD_IDS[0], type="lead.captured", at=AT, detail={"n": n}))
        session.add(_lead(lead_id, n))
        session.add(
            Touch(
                lead_id=lead_id,
                channel="referral",
                campaign="spring",
                utm={"source": "x"},
                matched_by="email",
                contact_name="Someone",
                at=AT + timedelta(minutes=n),
            )
        )
        session.add(Touch(lead_id=lead_id, channel="web", campaign=None, at=AT))
        session.add(LeadRedFlag(lead_id=lead_id, name="no_budget", raised_at=AT))
        session.add(StageChange(lead_id=lead_id, from_stage="awareness", to_stage="interest", cause="x", at=AT))
        session.add(Activity(lead_id=lead_id, type="email.opened", at=AT, detail={}))
        session.flush()
        session.add(Activity(lead_id=lead_id, type="lead.touched", at=AT))  # detail from its default
        session.scalars(select(Lead.id)).all()  # autoflush with only insert-only rows pending
        session.get(Lead, lead_id).engagement_score = n  # type: ignore[union-attr]
        session.add(StageChange(lead_id=lead_id, from_stage="interest", to_stage="desire", cause="y", at=AT))


def _rows(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    tables = {"touches": Touch, "stage_history": StageChange, "activity": Activity, "red_flags": LeadRedFlag}
    found: dict[str, list[tuple[Any, ...]]] = {}
    for name, model in tables.items():
        columns = list(model.__table__.columns)
        found[name] = [tuple(row) for row in session.execute(select(*columns).order_by(columns[0]))]
    return found


def test_insert_only_rows_match_the_orm_flush() -> None:
    expected_engine, engine = _engine(), _engine()
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with Session(expected_engine) as session, session.begin():
        _work(session)
    with LeadsSession(engine) as session, session.begin():
        _work(session)
    with Session(expected_engine) as expected, Session(engine) as session:
        assert _rows(session) == _rows(expected)
        assert [tuple(r) for r in session.execute(select(Lead.id, Lead.engagement_score).order_by(Lead.id))] == [
            tuple(r) for r in expected.execute(select(Lead.id, Lead.engagement_score).order_by(Lead.id))
        ]
    activity_inserts = [s for s in statements if s.startswith("INSERT INTO lead_activity")]
    assert len(activity_inserts) <= 4  # one per flush and set of columns (the ORM: 6, one per row)


def test_a_rolled_back_savepoint_leaves_none_of_its_rows() -> None:
    engine = _engine()
    with LeadsSession(engine) as session, session.begin():
        session.add(_lead(LEAD_IDS[0], 0))
        session.add(Activity(lead_id=LEAD_IDS[0], type="kept", at=AT, detail={}))
        savepoint = session.begin_nested()
        session.add(Activity(lead_id=LEAD_IDS[0], type="dropped", at=AT, detail={}))
        session.flush()
        savepoint.rollback()
        session.add(Activity(lead_id=LEAD_IDS[0], type="after", at=AT, detail={}))
    with Session(engine) as reader:
        assert list(reader.scalars(select(Activity.type).order_by(Activity.id))) == ["kept", "after"]


async def test_capture_candidates_in_one_query_match_the_two_queries(tmp_path: Path) -> None:
    """``record.capture_candidates`` answers as ``lead_with_key_or_email`` and ``company_leads``
    do: the company's first live leads in capture order (merged and erased ones left out,
    at most ``COMPANY_CANDIDATES``), and the lead with the key, else with the address."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'leads.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlumbingBase.metadata.create_all)
        await conn.run_sync(Base.metadata.create_all)
    uow = UnitOfWorkFactory(engine, producer="leads", clock=SimulatedClock(AT))
    async with uow() as tx:
        for n in range(domain.COMPANY_CANDIDATES + 5):
            lead = _lead(uuid.UUID(int=1000 + (n * 7919) % 997), n)
            lead.email = lead.email_key = f"p{n}@acme.example"
            lead.company_domain = "acme.example"
            lead.created_at = AT + timedelta(minutes=n % 13)
            lead.merged_into = LEAD_IDS[0] if n % 11 == 3 else None
            lead.erased_at = AT if n % 17 == 5 else None
            tx.session.add(lead)
        other = _lead(LEAD_IDS[1], 999)
        other.email, other.email_key = "Ann@Other.example", "ann@other.example"
        tx.session.add(other)
    cases = [
        ("p4@acme.example", "p4@acme.example", "acme.example"),
        ("nobody@acme.example", "nobody@acme.example", "acme.example"),
        ("ann@other.example", "x@other.example", "other.example"),
        ("y@other.example", "Ann@Other.example", "other.example"),
        ("z@none.example", "z@none.example", "none.example"),
    ]
    for key, email, company in cases:
        async with uow() as tx:
            found, colleagues = await record.capture_candidates(tx, key, email, company)
            expected = await record.lead_with_key_or_email(tx, key, email)
            expected_colleagues = list(await record.company_leads(tx, company))
            # Names and ids, not leads: the same people.
            assert (found.id if found else None) == (expected.id if expected else None)
            assert colleagues == expected_colleagues
            assert colleagues is not None and len(colleagues) <= domain.COMPANY_CANDIDATES
    await engine.dispose()

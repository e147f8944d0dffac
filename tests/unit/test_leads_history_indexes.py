"""Leads' dedupe queries on a grown history: a company's candidates come from its own entries
of ``ix_leads_company_live``, not from a walk over every live lead (which grew with history)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import MetaData, event

from bench import history
from services.leads import capture, record
from services.leads.context import Context
from services.leads.metrics import LeadsMetrics
from services.leads.schemas import LeadIn
from services.leads.settings import Settings
from services.leads.store import Base
from shared.clock import Clock
from shared.db import create_engine
from shared.migrations import upgrade_async
from shared.uow import UnitOfWorkFactory

REPO = Path(__file__).resolve().parents[2]
COMPANIES = 4


async def test_the_migrations_make_the_company_index_as_the_model_says(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = f"sqlite+aiosqlite:///{tmp_path / 'leads.db'}"
    await upgrade_async(REPO / "services" / "leads" / "migrations", url)
    engine = create_engine(url)
    wanted = MetaData(naming_convention=Base.metadata.naming_convention)
    Base.metadata.tables["leads"].to_metadata(wanted)

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection)
        return [d for d in compare_metadata(context, wanted) if "ix_leads_company_live" in repr(d)]

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_a_batchs_company_candidates_read_the_companies_alone(tmp_path: Path) -> None:
    path = tmp_path / "leads.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(REPO / "services" / "leads" / "migrations", url)
    engine = create_engine(url)
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    ctx = Context(settings=Settings(database_url=url), metrics=LeadsMetrics(CollectorRegistry(), uow.sessions))
    try:
        async with uow() as tx:
            for n in range(120):
                body = LeadIn(
                    name=f"Person {n}",
                    email=f"p{n}@co{n % COMPANIES}.example.com",
                    channel="website",
                    consent_marketing=True,
                )
                await capture.capture_lead(tx, ctx, body)
    finally:
        await engine.dispose()
    # Grown as the benchmark grows it: copies keep their company, so each has hundreds of leads.
    history.multiply(path, factor=20, rows=100_000)

    engine = create_engine(url)
    uow = UnitOfWorkFactory(engine, producer="leads", clock=Clock())
    sent: list[tuple[str, Any]] = []

    def _log(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "row_number()" in statement:
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", _log)
    try:
        async with uow() as tx:
            emails = [f"new{n}@co{n}.example.com" for n in range(COMPANIES)]
            known = await record._known_leads(tx, emails)
            companies = {}
            for colleagues in known.by_company.values():
                for colleague in colleagues:
                    lead = await tx.session.get(record.Lead, colleague.id)
                    assert lead is not None
                    companies[colleague.id] = lead.company_domain
    finally:
        await engine.dispose()

    # Same candidates as before: each company's first COMPANY_CANDIDATES in capture order.
    for company, leads in known.by_company.items():
        assert len(leads) == record.domain.COMPANY_CANDIDATES
        assert all(companies[lead.id] == company for lead in leads)
        assert leads == sorted(leads, key=lambda lead: (lead.created_at, lead.id))
    [(statement, parameters)] = sent
    db = sqlite3.connect(path)
    try:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    finally:
        db.close()
    assert any("ix_leads_company_live" in step for step in plan), plan
    assert not any("ix_leads_merged_into " in step or step.startswith("SCAN leads") for step in plan), plan

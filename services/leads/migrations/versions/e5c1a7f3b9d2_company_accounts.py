"""company accounts: the people of one company linked, never merged

Revision ID: e5c1a7f3b9d2
Revises: d2a7c9e4b1f6
Create Date: 2026-12-06 18:45:00.000000

A data migration links the leads already captured (the same rule as a capture:
services/leads/domain/accounts.py), so ``GET /accounts/{id}`` and the events of later touches
see every person of a company, not only those captured after the upgrade.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import shared.db
from services.leads.domain.accounts import account_key

revision: str = "e5c1a7f3b9d2"
down_revision: str | None = "d2a7c9e4b1f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    accounts = op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("domain", "name_key", name="uq_accounts_domain_name_key"),
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_account_id"), ["account_id"], unique=False)
    _link_existing_leads(accounts)


def _link_existing_leads(accounts: sa.Table) -> None:
    """Every live lead with a work address and a company name joins its company's account."""
    bind = op.get_bind()
    leads = sa.table(
        "leads",
        sa.column("id", sa.Uuid()),
        sa.column("email", sa.String()),
        sa.column("company", sa.String()),
        sa.column("created_at", shared.db.UTCDateTime()),
        sa.column("erased_at", shared.db.UTCDateTime()),
        sa.column("merged_into", sa.Uuid()),
        sa.column("account_id", sa.Uuid()),
    )
    rows = bind.execute(
        sa.select(leads.c.id, leads.c.email, leads.c.company, leads.c.created_at)
        .where(leads.c.erased_at.is_(None), leads.c.merged_into.is_(None), leads.c.email.is_not(None))
        .order_by(leads.c.created_at, leads.c.id)
    ).all()
    made: dict[tuple[str, str], uuid.UUID] = {}
    for lead_id, email, company, created_at in rows:
        key = account_key(email, company)
        if key is None:
            continue
        account_id = made.get((key.domain, key.name_key))
        if account_id is None:
            account_id = made[(key.domain, key.name_key)] = uuid.uuid4()
            bind.execute(
                sa.insert(accounts).values(
                    id=account_id,
                    name=company.strip()[:200],
                    domain=key.domain,
                    name_key=key.name_key,
                    created_at=created_at or datetime.now(UTC),
                )
            )
        bind.execute(sa.update(leads).where(leads.c.id == lead_id).values(account_id=account_id))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_account_id"))
        batch_op.drop_column("account_id")
    op.drop_table("accounts")

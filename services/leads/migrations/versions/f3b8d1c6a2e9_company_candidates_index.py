"""company candidates index: a company's live leads in capture order, from one partial index

Revision ID: f3b8d1c6a2e9
Revises: e5c1a9d3f7b2
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3b8d1c6a2e9"
down_revision: str | None = "e5c1a9d3f7b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("merged_into IS NULL AND erased_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_leads_company_live",
        "leads",
        ["company_domain", "created_at", "id"],
        unique=False,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_leads_company_live", table_name="leads")

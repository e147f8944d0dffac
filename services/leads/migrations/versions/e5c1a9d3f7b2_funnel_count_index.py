"""funnel count index: live leads per stage counted from an index, not the table

Revision ID: e5c1a9d3f7b2
Revises: 690ee214a048
"""

from __future__ import annotations

from alembic import op

revision: str = "e5c1a9d3f7b2"
down_revision: str | None = "690ee214a048"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_leads_merged_into_stage", "leads", ["merged_into", "stage"])


def downgrade() -> None:
    op.drop_index("ix_leads_merged_into_stage", table_name="leads")

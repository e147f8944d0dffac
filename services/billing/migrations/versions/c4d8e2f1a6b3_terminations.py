"""terminations: the agency ends a relationship (subscriptions end, a final invoice)

Revision ID: c4d8e2f1a6b3
Revises: 9a1c4e7d2b10
Create Date: 2026-12-06 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "c4d8e2f1a6b3"
down_revision: str | None = "9a1c4e7d2b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terminations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("effective_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("final_invoice_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminations")),
    )
    with op.batch_alter_table("terminations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminations_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminations_effective_at"), ["effective_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminations_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("terminations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminations_status"))
        batch_op.drop_index(batch_op.f("ix_terminations_effective_at"))
        batch_op.drop_index(batch_op.f("ix_terminations_lead_id"))
    op.drop_table("terminations")

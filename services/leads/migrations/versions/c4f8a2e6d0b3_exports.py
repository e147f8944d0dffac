"""exports: a person's data gathered on request, with each service's part (issue 21, part 3)

Revision ID: c4f8a2e6d0b3
Revises: 2ff196a252fc
Create Date: 2026-12-06 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "c4f8a2e6d0b3"
down_revision: str | None = "2ff196a252fc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.JSON(), nullable=False),
        sa.Column("requested_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exports_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exports_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "export_chunks",
        sa.Column("export_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=20), nullable=False),
        sa.Column("chunk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("part", sa.JSON(), nullable=False),
        sa.Column("mail", sa.JSON(), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["export_id"], ["exports.id"], name=op.f("fk_export_chunks_export_id_exports")),
        sa.PrimaryKeyConstraint("export_id", "service", "chunk", name=op.f("pk_export_chunks")),
    )


def downgrade() -> None:
    op.drop_table("export_chunks")
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exports_expires_at"))
        batch_op.drop_index(batch_op.f("ix_exports_lead_id"))
    op.drop_table("exports")

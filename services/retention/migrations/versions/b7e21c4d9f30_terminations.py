"""terminations: the agency ends a relationship itself

Revision ID: b7e21c4d9f30
Revises: 5252b659b253
Create Date: 2026-12-06 18:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "b7e21c4d9f30"
down_revision: str | None = "5252b659b253"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terminations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("notice_days", sa.Integer(), nullable=False),
        sa.Column("effective_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("subscription_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["clients.lead_id"], name=op.f("fk_terminations_lead_id_clients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminations")),
    )
    with op.batch_alter_table("terminations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminations_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminations_effective_at"), ["effective_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("terminations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminations_effective_at"))
        batch_op.drop_index(batch_op.f("ix_terminations_lead_id"))
    op.drop_table("terminations")

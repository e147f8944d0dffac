"""company accounts on clients, client notes, manual tiers and the computed tier

Revision ID: a3d9c6e1f7b4
Revises: e5a1f0c3d2b8
Create Date: 2026-12-06 18:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "a3d9c6e1f7b4"
down_revision: str | None = "e5a1f0c3d2b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("computed_tier", sa.String(length=20), nullable=True))
        batch_op.create_index(batch_op.f("ix_clients_account_id"), ["account_id"], unique=False)
    op.create_table(
        "client_notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("author_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["clients.lead_id"], name=op.f("fk_client_notes_lead_id_clients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_notes")),
    )
    with op.batch_alter_table("client_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_client_notes_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_client_notes_created_at"), ["created_at"], unique=False)
    op.create_table(
        "manual_tiers",
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("tier", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until", sa.Date(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=True),
        sa.Column("set_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["clients.lead_id"], name=op.f("fk_manual_tiers_lead_id_clients")),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_manual_tiers")),
    )
    with op.batch_alter_table("manual_tiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_manual_tiers_until"), ["until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("manual_tiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manual_tiers_until"))
    op.drop_table("manual_tiers")
    with op.batch_alter_table("client_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_notes_created_at"))
        batch_op.drop_index(batch_op.f("ix_client_notes_lead_id"))
    op.drop_table("client_notes")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clients_account_id"))
        batch_op.drop_column("computed_tier")
        batch_op.drop_column("account_id")

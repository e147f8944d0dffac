"""exchange rates as data, months of under-used hours

Revision ID: e5a1f0c3d2b8
Revises: b7e21c4d9f30
Create Date: 2026-12-06 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "e5a1f0c3d2b8"
down_revision: str | None = "b7e21c4d9f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "exchange_rates",
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("quote", sa.String(length=3), nullable=False),
        sa.Column("valid_from", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rate_text", sa.String(length=40), nullable=False),
        sa.Column("set_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("currency", "quote", "valid_from", name=op.f("pk_exchange_rates")),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("underused_months", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("underused_months")
    op.drop_table("exchange_rates")

"""company accounts: the account a client belongs to (from lead.captured)

Revision ID: f2b6d8a1c3e5
Revises: c4d8e2f1a6b3
Create Date: 2026-12-06 18:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f2b6d8a1c3e5"
down_revision: str | None = "c4d8e2f1a6b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_accounts_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_account_id"))
        batch_op.drop_column("account_id")

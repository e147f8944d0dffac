"""terminated clients and the returning-client surcharge

Revision ID: d2a7c9e4b1f6
Revises: b3e5f1a2c7d9
Create Date: 2026-12-06 18:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "d2a7c9e4b1f6"
down_revision: str | None = "b3e5f1a2c7d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terminated_clients",
        sa.Column("termination_id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("terminated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("termination_id", name=op.f("pk_terminated_clients")),
    )
    with op.batch_alter_table("terminated_clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminated_clients_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminated_clients_email_hash"), ["email_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminated_clients_domain"), ["domain"], unique=False)
        batch_op.create_index(batch_op.f("ix_terminated_clients_company"), ["company"], unique=False)
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("surcharge", shared.db.Money(precision=20, scale=4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("surcharge")
    with op.batch_alter_table("terminated_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terminated_clients_company"))
        batch_op.drop_index(batch_op.f("ix_terminated_clients_domain"))
        batch_op.drop_index(batch_op.f("ix_terminated_clients_email_hash"))
        batch_op.drop_index(batch_op.f("ix_terminated_clients_lead_id"))
    op.drop_table("terminated_clients")

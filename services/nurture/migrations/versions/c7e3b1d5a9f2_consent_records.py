"""consent records: every grant, request and withdrawal of marketing consent

Revision ID: c7e3b1d5a9f2
Revises: 9f835212da51
Create Date: 2026-12-06 19:00:00.000000

The history starts at this upgrade: what people consented to before has no record of its
source or wording (their current consent stays as it is on ``contacts``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "c7e3b1d5a9f2"
down_revision: str | None = "9f835212da51"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("wording", sa.String(length=40), nullable=True),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_records_lead_id"), ["lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_records_lead_id"))
    op.drop_table("consent_records")

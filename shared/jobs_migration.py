"""The ``job_failures`` table (``shared.jobs``) as one migration step that each service's
Alembic revision runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db


def upgrade() -> None:
    op.create_table(
        "job_failures",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("failed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("given_up", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("job", "key", name=op.f("pk_job_failures")),
    )


def downgrade() -> None:
    op.drop_table("job_failures")

"""The ``person_keys`` table (``shared.crypto``) as one migration step that each service's
Alembic revision runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db


def upgrade() -> None:
    op.create_table(
        "person_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_person_keys")),
    )
    op.create_index("ix_person_keys_subject", "person_keys", ["subject_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_person_keys_subject", table_name="person_keys")
    op.drop_table("person_keys")

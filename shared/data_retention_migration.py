"""Audit rows may be deleted once their retention ends, and only then (``shared.data_retention``):
the ``audit_purges`` table, and the audit trail's trigger taught to let a row go when a recorded
purge covers it, as one migration step that each service's Alembic revision runs. UPDATE stays
refused, and so does DELETE of any row no purge covers."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

_APPEND_ONLY = "audit_log is append-only"

_SQLITE_STRICT = (
    f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
)
# Both columns hold UTC as the same fixed-width text on SQLite, so text order is time order.
_SQLITE_PURGEABLE = (
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "WHEN NOT EXISTS (SELECT 1 FROM audit_purges WHERE audit_purges.cutoff > OLD.at) "
    f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
)
_POSTGRES_STRICT = (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$"
)
_POSTGRES_PURGEABLE = (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_purges WHERE audit_purges.cutoff > OLD.at) THEN "
    "RETURN OLD; END IF; "
    f"RAISE EXCEPTION '{_APPEND_ONLY}'; END $$"
)


def upgrade() -> None:
    op.create_table(
        "audit_purges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cutoff", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_purges")),
    )
    op.create_index(op.f("ix_audit_purges_cutoff"), "audit_purges", ["cutoff"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        op.execute(_SQLITE_PURGEABLE)
    else:
        op.execute(_POSTGRES_PURGEABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        op.execute(_SQLITE_STRICT)
    else:
        op.execute(_POSTGRES_STRICT)
    op.drop_index(op.f("ix_audit_purges_cutoff"), table_name="audit_purges")
    op.drop_table("audit_purges")

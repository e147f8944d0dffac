"""audit_purges: audit rows may be deleted once their retention ends, and only then

Revision ID: 438677b4c82b
Revises: a3d9c6e1f7b4
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

from shared import data_retention_migration

revision: str = "438677b4c82b"
down_revision: str | None = "a3d9c6e1f7b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    data_retention_migration.upgrade()


def downgrade() -> None:
    data_retention_migration.downgrade()

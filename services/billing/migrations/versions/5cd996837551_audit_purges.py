"""audit_purges: audit rows may be deleted once their retention ends, and only then

Revision ID: 5cd996837551
Revises: f2b6d8a1c3e5
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

from shared import data_retention_migration

revision: str = "5cd996837551"
down_revision: str | None = "f2b6d8a1c3e5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    data_retention_migration.upgrade()


def downgrade() -> None:
    data_retention_migration.downgrade()

"""audit_purges: audit rows may be deleted once their retention ends, and only then

Revision ID: 2ff196a252fc
Revises: e5c1a7f3b9d2
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

from shared import data_retention_migration

revision: str = "2ff196a252fc"
down_revision: str | None = "e5c1a7f3b9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    data_retention_migration.upgrade()


def downgrade() -> None:
    data_retention_migration.downgrade()

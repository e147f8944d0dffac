"""audit_purges: audit rows may be deleted once their retention ends, and only then

Revision ID: b038445411a2
Revises: c7e3b1d5a9f2
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

from shared import data_retention_migration

revision: str = "b038445411a2"
down_revision: str | None = "c7e3b1d5a9f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    data_retention_migration.upgrade()


def downgrade() -> None:
    data_retention_migration.downgrade()

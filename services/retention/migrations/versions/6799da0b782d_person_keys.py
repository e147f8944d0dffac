"""person keys: every person's data key, wrapped, folded from the keys topic (crypto-shredding)

Revision ID: 6799da0b782d
Revises: 438677b4c82b
"""

from __future__ import annotations

from shared import crypto_migration

revision: str = "6799da0b782d"
down_revision: str | None = "438677b4c82b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    crypto_migration.upgrade()


def downgrade() -> None:
    crypto_migration.downgrade()

"""person keys: every person's data key, wrapped, folded from the keys topic (crypto-shredding)

Revision ID: 690ee214a048
Revises: c4f8a2e6d0b3
"""

from __future__ import annotations

from shared import crypto_migration

revision: str = "690ee214a048"
down_revision: str | None = "c4f8a2e6d0b3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    crypto_migration.upgrade()


def downgrade() -> None:
    crypto_migration.downgrade()

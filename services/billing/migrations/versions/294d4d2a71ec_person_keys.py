"""person keys: every person's data key, wrapped, folded from the keys topic (crypto-shredding)

Revision ID: 294d4d2a71ec
Revises: 5cd996837551
"""

from __future__ import annotations

from shared import crypto_migration

revision: str = "294d4d2a71ec"
down_revision: str | None = "5cd996837551"
branch_labels = None
depends_on = None


def upgrade() -> None:
    crypto_migration.upgrade()


def downgrade() -> None:
    crypto_migration.downgrade()

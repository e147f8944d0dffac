"""person keys: every person's data key, wrapped, folded from the keys topic (crypto-shredding)

Revision ID: a12be226968b
Revises: b038445411a2
"""

from __future__ import annotations

from shared import crypto_migration

revision: str = "a12be226968b"
down_revision: str | None = "b038445411a2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    crypto_migration.upgrade()


def downgrade() -> None:
    crypto_migration.downgrade()

"""access: people, personal tokens, the audit trail; Idempotency-Key scoped to the caller

Revision ID: 8c461bb5de35
Revises: 1ecc1f5c1f3d
Create Date: 2026-12-06 12:00:00
"""
from typing import Sequence, Union

from shared.access import migration

revision: str = '8c461bb5de35'
down_revision: Union[str, None] = '1ecc1f5c1f3d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    migration.upgrade()


def downgrade() -> None:
    migration.downgrade()

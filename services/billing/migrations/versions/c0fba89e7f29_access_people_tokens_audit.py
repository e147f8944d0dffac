"""access: people, personal tokens, the audit trail; Idempotency-Key scoped to the caller

Revision ID: c0fba89e7f29
Revises: 5646cdc99e8c
Create Date: 2026-12-06 12:00:00
"""
from typing import Sequence, Union

from shared.access import migration

revision: str = 'c0fba89e7f29'
down_revision: Union[str, None] = '5646cdc99e8c'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    migration.upgrade()


def downgrade() -> None:
    migration.downgrade()

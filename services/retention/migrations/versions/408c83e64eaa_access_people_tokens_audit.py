"""access: people, personal tokens, the audit trail; Idempotency-Key scoped to the caller

Revision ID: 408c83e64eaa
Revises: 7d9ea7cfa4b4
Create Date: 2026-12-06 12:00:00
"""
from typing import Sequence, Union

from shared.access import migration

revision: str = '408c83e64eaa'
down_revision: Union[str, None] = '7d9ea7cfa4b4'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    migration.upgrade()


def downgrade() -> None:
    migration.downgrade()

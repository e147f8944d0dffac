"""job_failures: records a scheduled job failed on, their backoff and whether it gave up

Revision ID: affe9574b5a4
Revises: 408c83e64eaa
Create Date: 2026-12-08 12:00:00
"""
from typing import Sequence, Union

from shared import jobs_migration

revision: str = 'affe9574b5a4'
down_revision: Union[str, None] = '408c83e64eaa'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    jobs_migration.upgrade()


def downgrade() -> None:
    jobs_migration.downgrade()

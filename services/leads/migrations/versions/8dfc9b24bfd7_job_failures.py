"""job_failures: records a scheduled job failed on, their backoff and whether it gave up

Revision ID: 8dfc9b24bfd7
Revises: 871133d55e2f
Create Date: 2026-12-08 12:00:00
"""
from typing import Sequence, Union

from shared import jobs_migration

revision: str = '8dfc9b24bfd7'
down_revision: Union[str, None] = '871133d55e2f'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    jobs_migration.upgrade()


def downgrade() -> None:
    jobs_migration.downgrade()

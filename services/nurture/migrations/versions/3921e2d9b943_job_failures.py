"""job_failures: records a scheduled job failed on, their backoff and whether it gave up

Revision ID: 3921e2d9b943
Revises: 8c461bb5de35
Create Date: 2026-12-08 12:00:00
"""
from typing import Sequence, Union

from shared import jobs_migration

revision: str = '3921e2d9b943'
down_revision: Union[str, None] = '8c461bb5de35'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    jobs_migration.upgrade()


def downgrade() -> None:
    jobs_migration.downgrade()

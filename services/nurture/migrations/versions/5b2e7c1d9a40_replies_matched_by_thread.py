"""replies matched by their thread only: lead_id may be null (unmatched), matched_by

Revision ID: 5b2e7c1d9a40
Revises: 3921e2d9b943
Create Date: 2026-12-06 13:00:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '5b2e7c1d9a40'
down_revision: Union[str, None] = '3921e2d9b943'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('matched_by', sa.String(length=20), nullable=True))
        batch_op.alter_column('lead_id', existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM replies WHERE lead_id IS NULL")
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.alter_column('lead_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column('matched_by')

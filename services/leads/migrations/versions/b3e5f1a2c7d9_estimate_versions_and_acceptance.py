"""estimate versions and acceptance

Revision ID: b3e5f1a2c7d9
Revises: 452c2edfa624
Create Date: 2026-12-06 18:10:00.000000
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.db


revision: str = 'b3e5f1a2c7d9'
down_revision: Union[str, None] = '452c2edfa624'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('estimate_versions',
    sa.Column('deal_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_until', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['deal_id'], ['deals.id'], name=op.f('fk_estimate_versions_deal_id_deals')),
    sa.PrimaryKeyConstraint('deal_id', 'version', name=op.f('pk_estimate_versions'))
    )
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch_op.add_column(sa.Column('digest', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('valid_until', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('signed_via', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('signed_ip', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('accepted_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('accepted_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.drop_column('accepted_digest')
        batch_op.drop_column('accepted_version')
        batch_op.drop_column('signed_ip')
        batch_op.drop_column('signed_via')
        batch_op.drop_column('valid_until')
        batch_op.drop_column('digest')
        batch_op.drop_column('version')

    op.drop_table('estimate_versions')

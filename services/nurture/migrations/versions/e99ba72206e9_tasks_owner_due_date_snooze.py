"""tasks: owner, due date, snooze; contacts: the lead's owner and account owner

A task made before this revision is due when it was made (``due_at = created_at``): it was
waiting for someone already. The idempotency key column catches up with the model (400
characters: "<caller>:<key>"), as the other services' databases did.

Revision ID: e99ba72206e9
Revises: 5b2e7c1d9a40
Create Date: 2026-12-06 15:49:29.237843
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import shared.db


revision: str = 'e99ba72206e9'
down_revision: Union[str, None] = '5b2e7c1d9a40'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('account_owner_id', sa.Uuid(), nullable=True))

    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.VARCHAR(length=255),
               type_=sa.String(length=400),
               existing_nullable=False)

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Uuid(), nullable=True))
        # Nullable until the rows there are have one (below).
        batch_op.add_column(sa.Column('due_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('snoozed_until', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('done_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_reason', sa.String(length=200), nullable=True))

    op.execute("UPDATE tasks SET due_at = created_at WHERE due_at IS NULL")

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.alter_column('due_at', existing_type=shared.db.UTCDateTime(timezone=True), nullable=False)
        batch_op.create_index(batch_op.f('ix_tasks_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_owner_id'), ['owner_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_owner_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_due_at'))
        batch_op.drop_column('closed_reason')
        batch_op.drop_column('done_at')
        batch_op.drop_column('snoozed_until')
        batch_op.drop_column('due_at')
        batch_op.drop_column('owner_id')

    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.String(length=400),
               type_=sa.VARCHAR(length=255),
               existing_nullable=False)

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('account_owner_id')
        batch_op.drop_column('owner_id')

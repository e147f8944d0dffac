"""clients: owner and account owner

The sales owner and the account owner of each client, folded from ``lead.captured`` and
``lead.assigned`` from now on; a client recorded before this revision has neither until its
lead is assigned again (or the store is rebuilt with ``clientflow replay retention``). The
idempotency key column catches up with the model (400 characters: "<caller>:<key>"), as the
other services' databases did.

Revision ID: 5252b659b253
Revises: affe9574b5a4
Create Date: 2026-12-06 15:59:01.816152
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '5252b659b253'
down_revision: Union[str, None] = 'affe9574b5a4'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('account_owner_id', sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f('ix_clients_account_owner_id'), ['account_owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_clients_owner_id'), ['owner_id'], unique=False)

    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.VARCHAR(length=255),
               type_=sa.String(length=400),
               existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('key',
               existing_type=sa.String(length=400),
               type_=sa.VARCHAR(length=255),
               existing_nullable=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clients_owner_id'))
        batch_op.drop_index(batch_op.f('ix_clients_account_owner_id'))
        batch_op.drop_column('account_owner_id')
        batch_op.drop_column('owner_id')

"""offers that bill: a discount or downgrade on a subscription, hours included per period

Revision ID: 9a1c4e7d2b10
Revises: 84dc038dbc3a
Create Date: 2026-12-06 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "9a1c4e7d2b10"
down_revision: str | None = "84dc038dbc3a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OFFER = (
    ("offer_kind", sa.String(length=12)),
    ("offer_fee", shared.db.Money(precision=20, scale=4)),
    ("offer_percent", shared.db.Money(precision=20, scale=4)),
    ("offer_included_hours", shared.db.Money(precision=20, scale=4)),
    ("offer_from", shared.db.UTCDateTime(timezone=True)),
    ("offer_until", shared.db.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for name, type_ in _OFFER:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("billed_periods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("included_hours", shared.db.Money(precision=20, scale=4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billed_periods", schema=None) as batch_op:
        batch_op.drop_column("included_hours")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for name, _ in reversed(_OFFER):
            batch_op.drop_column(name)

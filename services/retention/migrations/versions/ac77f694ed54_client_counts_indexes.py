"""clients by tier and by band counted from two partial indexes (the gauges' refresh)

Revision ID: ac77f694ed54
Revises: 6799da0b782d
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ac77f694ed54"
down_revision: str | None = "6799da0b782d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLIENTS = sa.text("became_client_at IS NOT NULL")


def upgrade() -> None:
    for column in ("tier", "band"):
        op.create_index(
            f"ix_clients_client_{column}",
            "clients",
            [column],
            unique=False,
            sqlite_where=_CLIENTS,
            postgresql_where=_CLIENTS,
        )


def downgrade() -> None:
    for column in ("band", "tier"):
        op.drop_index(f"ix_clients_client_{column}", table_name="clients")

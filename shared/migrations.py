"""Alembic, driven from code: each service keeps its own ``migrations/`` folder and database.

Alembic (with Mako and Pygments, 7 MB resident) is imported when a migration runs, not when
a service starts: services started by ``clientflow run`` or the benchmark find their
databases migrated already, and never load it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import PlumbingBase

if TYPE_CHECKING:
    from alembic.config import Config


def config(migrations_dir: Path, url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _prepare(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def upgrade(migrations_dir: Path, url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (synchronous; not from a running loop)."""
    from alembic import command

    _prepare(url)
    command.upgrade(config(migrations_dir, url), revision)


async def upgrade_async(migrations_dir: Path, url: str) -> None:
    await asyncio.to_thread(upgrade, migrations_dir, url)


def revision(migrations_dir: Path, url: str, message: str) -> None:
    """Autogenerate a new revision by comparing the models with the database at ``url``."""
    from alembic import command

    _prepare(url)
    command.revision(config(migrations_dir, url), message=message, autogenerate=True)


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``."""
    from alembic import context

    targets = [PlumbingBase.metadata, metadata]
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    sqlite = make_url(url).get_backend_name() == "sqlite"

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=targets,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=targets, literal_binds=True, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(online())

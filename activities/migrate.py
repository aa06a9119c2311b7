"""Schema migrations: Alembic owns the schema of the records.

    escalate db upgrade      # bring $DATABASE_URL to head
    escalate db current      # which revision a database is at

The worker runs the upgrade at start-up unless started with --no-migrate.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str:
    """Upgrade the database behind `engine`; returns the revision it is now at."""

    def run(conn: Connection) -> str | None:
        command.upgrade(alembic_config(conn), revision)
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.begin() as conn:
        return str(await conn.run_sync(run))


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

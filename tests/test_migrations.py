"""Alembic owns the schema: an empty database upgrades to head and matches the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from activities.migrate import current, head, upgrade
from activities.records import Base, Records
from tests.conftest import sqlite_url


async def test_upgrade_from_empty_matches_the_models(any_records: Records) -> None:
    # any_records is already at head (the fixture runs the migrations)
    assert await current(any_records.engine) == head()

    def drift(conn: Connection) -> list[Any]:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with any_records.engine.connect() as conn:
        assert await conn.run_sync(drift) == []
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"cases", "timeline", "messages", "assignments", "reports", "alembic_version"} <= tables


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    records = Records.from_url(sqlite_url(tmp_path))
    try:
        assert await current(records.engine) is None
        assert await upgrade(records.engine) == head()
        assert await upgrade(records.engine) == head()
    finally:
        await records.close()

"""Alembic environment: runs on the connection the caller passes (see migrate.py)."""

from __future__ import annotations

from alembic import context

from activities.records import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `escalate db upgrade` or activities.migrate")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

"""Delivery state in the outbox: one row per message and channel (mail, chat, webhook, log),
queued -> sent | failed, with attempts, the last reason and when to try again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from activities.records import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as t:
        t.add_column(sa.Column("medium", sa.String(10), nullable=False, server_default="log"))
        t.add_column(sa.Column("recipient_name", sa.String(200), nullable=True))
        t.add_column(sa.Column("target", sa.Text(), nullable=True))
        t.add_column(sa.Column("html", sa.Text(), nullable=True))
        t.add_column(sa.Column("short", sa.Text(), nullable=True))
        t.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        t.add_column(sa.Column("status", sa.String(10), nullable=False, server_default="queued"))
        t.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("reason", sa.Text(), nullable=True))
        t.add_column(sa.Column("next_attempt_at", UtcDateTime(), nullable=True))
        t.add_column(sa.Column("lease_until", UtcDateTime(), nullable=True))
        t.create_index("ix_messages_status_next", ["status", "next_attempt_at"])
    op.execute("UPDATE messages SET status = 'sent' WHERE sent_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("messages") as t:
        t.drop_index("ix_messages_status_next")
        for name in (
            "lease_until",
            "next_attempt_at",
            "reason",
            "attempts",
            "status",
            "payload",
            "short",
            "html",
            "target",
            "recipient_name",
            "medium",
        ):
            t.drop_column(name)

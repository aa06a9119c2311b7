"""What the policy simulator replays: each person's act on its timeline line (the message
and its structural fields, no free text), whether the customer was a VIP, and every policy
version the cases ran with.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from activities.records import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timeline") as batch:
        batch.add_column(sa.Column("act", sa.JSON(), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.add_column(
            sa.Column("customer_vip", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "policies",
        sa.Column("version", sa.String(50), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("first_used_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policies")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("customer_vip")
    with op.batch_alter_table("timeline") as batch:
        batch.drop_column("act")

"""What the desk console lists cases by: acknowledged, paused, warned, breaches, the pending
approval's approvers and deadline, the end of the reopen window; and which way each person's
message came in the timeline.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from activities.records import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as t:
        t.add_column(sa.Column("acknowledged", sa.Boolean(), nullable=False, server_default="0"))
        t.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default="0"))
        t.add_column(sa.Column("warned", sa.Boolean(), nullable=False, server_default="0"))
        t.add_column(sa.Column("breaches", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("approvers", sa.Text(), nullable=True))
        t.add_column(sa.Column("approval_due_by", UtcDateTime(), nullable=True))
        t.add_column(sa.Column("reopen_until", UtcDateTime(), nullable=True))
        t.create_index("ix_cases_department_tier", ["department", "tier"])
    with op.batch_alter_table("timeline") as t:
        t.add_column(sa.Column("via", sa.String(10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("timeline") as t:
        t.drop_column("via")
    with op.batch_alter_table("cases") as t:
        t.drop_index("ix_cases_department_tier")
        for column in (
            "reopen_until",
            "approval_due_by",
            "approvers",
            "breaches",
            "warned",
            "paused",
            "acknowledged",
        ):
            t.drop_column(column)

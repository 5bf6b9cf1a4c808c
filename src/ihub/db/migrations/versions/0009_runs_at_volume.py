"""runs at volume: indexes for a flow's runs of one status and a failure group's runs per project

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 05:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_flow_status", ["flow_id", "status", "id"], unique=False)
        batch_op.create_index("ix_runs_failure_project", ["failure_key", "project_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_failure_project")
        batch_op.drop_index("ix_runs_flow_status")

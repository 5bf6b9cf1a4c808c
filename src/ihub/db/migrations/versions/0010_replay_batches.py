"""bulk replay: replay batches and their items

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ihub.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replay_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("rate", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("upto_run_id", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("selected", sa.Integer(), nullable=False),
        sa.Column("replayed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", ihub.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", ihub.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", ihub.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_replay_batches_created_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_replay_batches_org_id_organizations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replay_batches")),
    )
    with op.batch_alter_table("replay_batches", schema=None) as batch_op:
        batch_op.create_index("ix_replay_batches_org", ["org_id", "id"], unique=False)
        batch_op.create_index("ix_replay_batches_status", ["status"], unique=False)

    op.create_table(
        "replay_items",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("replay_run_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["replay_batches.id"],
            name=op.f("fk_replay_items_batch_id_replay_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "run_id", name=op.f("pk_replay_items")),
    )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_replay_of", ["replay_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_replay_of")
    op.drop_table("replay_items")
    with op.batch_alter_table("replay_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_replay_batches_status")
        batch_op.drop_index("ix_replay_batches_org")
    op.drop_table("replay_batches")

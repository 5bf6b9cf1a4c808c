"""audit log

Revision ID: 0007
Revises: 0005 (the lead repoints it at 0006 when both are merged)
Create Date: 2026-11-26 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ihub.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", ihub.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=400), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("org_path", sa.String(length=2000), nullable=False),
        sa.Column("action", sa.String(length=300), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_entries_org_path_id", ["org_path", "id"], unique=False)
        batch_op.create_index("ix_audit_entries_actor_id", ["actor_user_id", "id"], unique=False)
        batch_op.create_index("ix_audit_entries_target_id", ["target_type", "target_id", "id"], unique=False)
        batch_op.create_index("ix_audit_entries_action_id", ["action", "id"], unique=False)
    # Append-only in the database (as ihub/audit/models.py declares for a schema built from the models).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit entries are append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
        )


def downgrade() -> None:
    op.drop_table("audit_entries")  # with its trigger
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_entries_append_only()")

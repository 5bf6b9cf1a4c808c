"""template versions: immutable saved definitions, and the version each project is pinned to

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:08:21.869513
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ihub.db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", ihub.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_template_versions_created_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
        sa.UniqueConstraint("template_id", "version", name=op.f("uq_template_versions_template_id_version")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template_version", sa.Integer(), server_default="1", nullable=False))

    # Backfill: earlier definitions were overwritten in place, so each template gets one version, its current
    # definition under its current number (saved when the template was last updated), and every project is
    # pinned to it: what runs after the upgrade is exactly what ran before.
    op.execute(
        "INSERT INTO template_versions (template_id, version, definition, created_at, created_by) "
        "SELECT id, version, definition, updated_at, NULL FROM templates"
    )
    op.execute(
        "UPDATE projects SET template_version = "
        "(SELECT templates.version FROM templates WHERE templates.id = projects.template_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("template_version")

    op.drop_table("template_versions")

"""connection health and runs that wait for a reconnect

Connections get a status (connected, expiring, needs_reconnect, error), its message and when they were last
refreshed and used; runs get the slot they wait for and until when (`waiting_for_connection`), and
`runs.status` widens to 32 characters for that status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 02:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ihub.db.base


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), server_default="connected", nullable=False))
        batch_op.add_column(sa.Column("status_message", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("last_refreshed_at", ihub.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", ihub.db.base.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column(
            "status", existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False
        )
        batch_op.add_column(sa.Column("waiting_for_slot", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("parked_until", ihub.db.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("parked_until")
        batch_op.drop_column("waiting_for_slot")
        batch_op.alter_column(
            "status", existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False
        )

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("last_refreshed_at")
        batch_op.drop_column("status_message")
        batch_op.drop_column("status")

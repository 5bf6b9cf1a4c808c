"""trigger keys: optional expiry and the expiry notice marker

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ihub.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys get no expiry: IHUB_TRIGGER_KEY_MAX_AGE_DAYS applies to keys registered after it is set.
    with op.batch_alter_table("trigger_keys") as batch:
        batch.add_column(sa.Column("expires_at", ihub.db.base.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("expiry_notified_at", ihub.db.base.UTCDateTime(), nullable=True))
        batch.create_index(batch.f("ix_trigger_keys_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trigger_keys") as batch:
        batch.drop_index(batch.f("ix_trigger_keys_expires_at"))
        batch.drop_column("expiry_notified_at")
        batch.drop_column("expires_at")

"""Projects made from a template, and the connections that fill the template's slots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime, utcnow
from ihub.projects.status import ConnectionStatus


class Project(CreatedAtMixin, Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    # NO ACTION: a template in use cannot be deleted, yet a whole org subtree can go in one statement.
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id"), index=True)
    # The template version the project runs (a template_versions.version); moves only by an explicit upgrade.
    template_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Connection(CreatedAtMixin, Base):
    """A template slot filled in for one project. Secret fields are sealed; the rest is plain config."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("project_id", "slot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slot_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets_sealed: Mapped[str | None] = mapped_column(Text)
    secret_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    configured: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Health (ihub.projects.health writes these, leaving updated_at alone: updated_at stamps what the engine
    # caches, config and secrets, and a health change must not make every worker decrypt the project again).
    status: Mapped[str] = mapped_column(
        String(16), default=ConnectionStatus.CONNECTED.value, server_default=ConnectionStatus.CONNECTED.value
    )
    # The provider's message for error / needs_reconnect (never a secret: redacted before it is stored).
    status_message: Mapped[str | None] = mapped_column(Text)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

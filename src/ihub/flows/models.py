"""A project's flows: one row per flow key of the project's template; its id is the public flow id."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin


class Flow(CreatedAtMixin, Base):
    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(100))
    # False once the template no longer defines this key; kept so run history keeps its flow.
    active: Mapped[bool] = mapped_column(Boolean, default=True)

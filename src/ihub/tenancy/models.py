"""Organizations (a tree, addressed by materialized path) and users."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin


class Organization(CreatedAtMixin, Base):
    __tablename__ = "organizations"
    __table_args__ = (UniqueConstraint("parent_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # NO ACTION (not RESTRICT): a subtree is deleted in one statement, checked at its end.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    # "/1/5/9/": every ancestor's id, so a subtree is one indexed prefix match.
    path: Mapped[str] = mapped_column(String(2000), index=True)


class User(CreatedAtMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))

"""Console passwords, one-time sign-in links and console sessions. Tokens are stored only as sha256 digests, so a
copy of the database signs nobody in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime, utcnow


class UserPassword(Base):
    """At most one per user; no row means the user has not chosen a password yet (or an admin reset it)."""

    __tablename__ = "user_passwords"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # An argon2id PHC string ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"): the parameters travel with the hash.
    hash: Mapped[str] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigninLink(CreatedAtMixin, Base):
    """An invitation or a password reset: whoever opens the link chooses the user's password, once."""

    __tablename__ = "signin_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    # Who asked for it (None: the server's shell); kept when that user is deleted, the link stays valid.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(CreatedAtMixin, Base):
    """A signed-in browser. Deleting the user deletes its sessions (foreign key), so they end at once."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The synchronizer token every form of this session must send back; useless without the session cookie.
    csrf: Mapped[str] = mapped_column(String(64))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    address: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str] = mapped_column(String(300))

"""Per-user API secret keys, the nonces they have signed, and the tokens they were exchanged for."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime


class ApiKey(CreatedAtMixin, Base):
    """One active key per user; regenerating replaces the row, which cascades to its nonces and tokens."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # The hub must recompute sha256(secret + nonce), so the secret is kept encrypted, not hashed.
    secret_sealed: Mapped[str] = mapped_column(Text)


class UsedNonce(CreatedAtMixin, Base):
    __tablename__ = "used_nonces"
    __table_args__ = (UniqueConstraint("key_id", "digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))


class ApiToken(CreatedAtMixin, Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

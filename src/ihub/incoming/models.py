"""Trigger clients (the JWT `iss`), their public keys, used assertion ids and webhook idempotency keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime


class TriggerClient(CreatedAtMixin, Base):
    """One external caller allowed to trigger one flow. `client_id` is the public `iss` (a UUID)."""

    __tablename__ = "trigger_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Keys published by the client itself; fetched, cached and refetched on an unknown kid.
    jwks_url: Mapped[str | None] = mapped_column(String(2000))
    created_by: Mapped[int | None] = mapped_column(Integer)


class TriggerKey(CreatedAtMixin, Base):
    """A public key of a client. A row without `jwk` only records a revoked kid of the client's JWKS."""

    __tablename__ = "trigger_keys"
    __table_args__ = (UniqueConstraint("client_pk", "kid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("trigger_clients.id", ondelete="CASCADE"), index=True)
    kid: Mapped[str] = mapped_column(String(200))
    alg: Mapped[str] = mapped_column(String(10))
    # Public JWK (never a private one); "generated" | "uploaded" | "jwks" tells where it came from.
    jwk: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # After this instant the token endpoint refuses assertions the key signs (None: valid until revoked).
    # Indexed for the periodic `trigger.key_expiring` check (incoming/expiry.py).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # When `trigger.key_expiring` was emitted for the current `expires_at`; cleared when the expiry changes,
    # so the notice is sent once per expiry, by whichever hub process claims it first.
    expiry_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UsedAssertion(Base):
    """`jti` values already exchanged, kept until the assertion expires. The unique constraint makes
    the single-use check one atomic insert, also across API nodes."""

    __tablename__ = "incoming_used_jti"
    __table_args__ = (UniqueConstraint("client_pk", "jti_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("trigger_clients.id", ondelete="CASCADE"))
    jti_digest: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class IdempotencyRecord(CreatedAtMixin, Base):
    """The first run started for an `Idempotency-Key` of a client (repeats within 24 h return it)."""

    __tablename__ = "incoming_idempotency"
    __table_args__ = (UniqueConstraint("client_pk", "key_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("trigger_clients.id", ondelete="CASCADE"))
    key_digest: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)

"""Event endpoints (where an organization wants events sent) and event deliveries (the outbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime, utcnow


class EventEndpoint(CreatedAtMixin, Base):
    """A URL of an organization that receives the listed event types of the organization's whole subtree."""

    __tablename__ = "event_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The `whsec_...` signing secret, sealed (context "event-endpoint:<id>"); shown once, at creation or rotation.
    secret_sealed: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret keeps signing too (a second signature) until this time, so receivers
    # can switch without losing events.
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The first failed attempt since the last success; an endpoint failing this long is disabled.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class EventDelivery(CreatedAtMixin, Base):
    """One event for one endpoint: the outbox row, inserted in the transaction of the change it reports.

    `message_id` is the Standard Webhooks `webhook-id`: the same on every attempt and on a re-send, so a
    receiver that remembers the ids it processed handles each event exactly once.
    """

    __tablename__ = "event_deliveries"
    __table_args__ = (
        # The deliverer's question: which pending deliveries are due.
        Index("ix_event_deliveries_status_due", "status", "next_attempt_at"),
        # An endpoint's deliveries, newest first, in pages.
        Index("ix_event_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("event_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact request body: the same bytes on every attempt.
    body: Mapped[str] = mapped_column(Text)
    # pending | delivered | failed (events/outbox.py DeliveryStatus).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Retries stop after this (created, or re-sent, plus the retry window).
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    # What went wrong, for people: status code or network error, never a secret or the receiver's body.
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

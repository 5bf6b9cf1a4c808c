"""OAuth apps (an organization's client at a provider) and pending authorizations (one per Connect)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime, utcnow


class OAuthApp(CreatedAtMixin, Base):
    """An organization's client registration at one provider; its sub-organizations inherit it unless they
    bring their own. The client secret is sealed (bound to the row id) and never returned."""

    __tablename__ = "oauth_apps"
    __table_args__ = (UniqueConstraint("org_id", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(50))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret_sealed: Mapped[str] = mapped_column(Text)
    # Overrides of the provider's URLs and default scopes (the `generic` provider has none of its own).
    authorize_url: Mapped[str | None] = mapped_column(String(2000))
    token_url: Mapped[str | None] = mapped_column(String(2000))
    scope: Mapped[str | None] = mapped_column(String(2000))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class OAuthState(CreatedAtMixin, Base):
    """One authorization request in flight: the `state` (only its digest) bound to a project's slot and the user
    who started it, with the PKCE verifier (sealed). Used at most once, valid for minutes."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slot_id: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("oauth_apps.id", ondelete="CASCADE"), index=True)
    verifier_sealed: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    return_url: Mapped[str | None] = mapped_column(String(2000))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""The audit log: one append-only row per unit of work a person committed (see ihub.audit.recorder)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, UTCDateTime, utcnow


class AuditEntry(Base):
    """Who changed what, when, from where. Rows are only ever inserted (and purged past retention): no
    foreign keys, so an entry outlives the user, organization or object it names."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        # One index per filter the list offers, each ending in id: the list is newest first by id (keyset).
        Index("ix_audit_entries_org_path_id", "org_path", "id"),
        Index("ix_audit_entries_actor_id", "actor_user_id", "id"),
        Index("ix_audit_entries_target_id", "target_type", "target_id", "id"),
        Index("ix_audit_entries_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Indexed for the retention purge (oldest first).
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # api | console | cli
    channel: Mapped[str] = mapped_column(String(16))
    # The user behind an API token or a console session; None for an operator at the server's shell.
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    # What identifies the actor for people: the user's e-mail, or `os-user@host` for the shell.
    actor_name: Mapped[str] = mapped_column(String(400))
    # The client address as the hub determines it (trusted proxies honoured); the host name for the shell.
    address: Mapped[str | None] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    # The organization the change belongs to (the deepest one containing every changed row): its path decides
    # which Owners see the entry (an Owner sees their organization's subtree).
    org_id: Mapped[int | None] = mapped_column(Integer)
    org_path: Mapped[str] = mapped_column(String(2000))
    # `PUT /api/v1/project/{project_id}`, `POST /console/project/{project_id}/setup`, `ihub template import`.
    action: Mapped[str] = mapped_column(String(300))
    # The row the work was about (table name and id): its first change that is more than a timestamp bump.
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    # [{"entity", "id", "op", "before", "after"}], secrets removed (recorder.py says how).
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


# Append-only in the database itself, not only by the absence of an update path in the code: an UPDATE of an
# entry fails on both backends. DELETE stays possible for the retention purge (service.purge_entries).
# The migration (0007) creates the same triggers; tests build the schema from the models, hence the events.
APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
)
APPEND_ONLY_POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit entries are append-only'; END $$",
    "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE ON audit_entries "
    "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()",
)

# (SQLAlchemy's DDL constructor carries no annotations.)
event.listen(
    AuditEntry.__table__,
    "after_create",
    DDL(APPEND_ONLY_SQLITE).execute_if(dialect="sqlite"),  # type: ignore[no-untyped-call]
)
for _statement in APPEND_ONLY_POSTGRESQL:
    event.listen(
        AuditEntry.__table__,
        "after_create",
        DDL(_statement).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
    )

"""Bulk replay: a batch (what to replay, how fast, how far it got) and one item per run it handled."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime
from ihub.runs.models import Run

# The skip rule asks "has this run a replay already?" for every run a batch reads (runs.replay_of = id); without
# an index that is a scan of all runs per page. Declared here, on the runs table, because only bulk replay asks.
Index("ix_runs_replay_of", Run.replay_of)


class ReplayBatch(CreatedAtMixin, Base):
    """One bulk replay (ihub.replays.worker describes how it progresses)."""

    __tablename__ = "replay_batches"
    __table_args__ = (
        Index("ix_replay_batches_org", "org_id", "id"),
        Index("ix_replay_batches_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Runs are selected in this organization's subtree only.
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    # The user who started it; None when started with `ihub replay start` from the server's shell.
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # {"failureKey", "flow", "since", "until", "status"} (ihub.replays.service.Selection), as the caller gave it.
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    # original | current (ihub.runs.service.REPLAY_VERSIONS).
    version: Mapped[str] = mapped_column(String(16))
    # Replays started per second at most.
    rate: Mapped[int] = mapped_column(Integer)
    # A BatchStatus value (ihub.replays.service).
    status: Mapped[str] = mapped_column(String(16))
    # The newest run id when the batch was made: runs failing later (its own replays among them) are not in it.
    upto_run_id: Mapped[int] = mapped_column(Integer)
    # The last run id handled (runs are handled oldest first): where a resumed batch goes on.
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    selected: Mapped[int] = mapped_column(Integer, default=0)
    replayed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # The hub process working on it, until when (like a run's lease: another process takes over after that).
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The latest reason a run could not be replayed (its flow left the template, ...).
    last_error: Mapped[str | None] = mapped_column(Text)


class ReplayItem(Base):
    """What a batch did with one run. The primary key (batch, run) is what makes a batch replay a run at most
    once, whatever crashes or concurrent workers happen: a second insert fails and its page rolls back."""

    __tablename__ = "replay_items"

    batch_id: Mapped[int] = mapped_column(ForeignKey("replay_batches.id", ondelete="CASCADE"), primary_key=True)
    # The run replayed or skipped (no foreign key: retention may delete old runs; the item stays as history).
    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # replayed | skipped | failed
    outcome: Mapped[str] = mapped_column(String(16))
    replay_run_id: Mapped[int | None] = mapped_column(Integer)
    # Why it was skipped or could not be replayed.
    detail: Mapped[str | None] = mapped_column(String(300))

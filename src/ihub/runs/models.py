"""Durable runs: the database is the truth about every trigger and every step attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ihub.db.base import Base, CreatedAtMixin, UTCDateTime
from ihub.runs.status import RunStatus


class Run(CreatedAtMixin, Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_project_created", "project_id", "id"),
        Index("ix_runs_status_next", "status", "next_attempt_at"),
        # The runs list's filters, each newest first by id (keyset): a project's runs of one status, a flow's
        # runs, a failure group's runs. A time range becomes an id range through `ix_runs_created_at` (ids grow
        # with time), so it needs no index of its own per filter.
        Index("ix_runs_project_status", "project_id", "status", "id"),
        Index("ix_runs_flow", "flow_id", "id"),
        Index("ix_runs_failure_key", "failure_key", "id"),
        Index("ix_runs_created_at", "created_at"),
        # A flow's runs of one status (the runs list's flow and status filters together), and a failure group's
        # runs per project (a subtree's page is a union of per-project pages: ihub.runs.service.page_runs).
        Index("ix_runs_flow_status", "flow_id", "status", "id"),
        Index("ix_runs_failure_project", "failure_key", "project_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Unique across hubs and database resets (ids restart at 1): the outgoing Idempotency-Key is built on it.
    uid: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"))
    flow_version: Mapped[int] = mapped_column(Integer, default=1)
    # A RunStatus value; changed only by ihub.runs.lifecycle. Plain text, no database enum (see runs/status.py).
    # 32: `waiting_for_connection` is longer than the 16 the first statuses needed.
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED.value)
    trigger_type: Mapped[str] = mapped_column(String(16))
    # The trigger as received: {"body", "contentType", "headers", "env", "clientId", "receivedAt"}.
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    replay_of: Mapped[int | None] = mapped_column(Integer)
    # How many times an executor claimed the run (a retry wait or a crash makes it more than one).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by POST /run/{id}/cancel while the run is executing; the engine stops before its next step.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Makes a trigger idempotent where the trigger can repeat (a schedule tick: "schedule:<flow>:<time>").
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # While waiting_for_connection: the project's connection slot the run waits for, and when it gives up.
    # Both stay set on a run whose wait expired (the claim keeps them), which is how the engine tells it apart.
    waiting_for_slot: Mapped[str | None] = mapped_column(String(100))
    parked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A failed run's failing step (loop indexes removed; empty when it failed outside a step) and its failure
    # group (ihub.runs.failures): set by the finish that failed it.
    failed_step: Mapped[str | None] = mapped_column(String(200))
    failure_key: Mapped[str | None] = mapped_column(String(32))


class StepRecord(Base):
    """One attempt of one step of a run. `path` addresses the step inside loops: `each[2].create`."""

    __tablename__ = "run_steps"
    __table_args__ = (Index("ix_run_steps_run_path", "run_id", "path", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(500))
    type: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # A StepStatus value (runs/status.py says what each means).
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Summaries for people: truncated, secrets redacted.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    # What later steps see as steps.<id> ({status, response, output, error}); restored when a run resumes.
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class FailureGroup(Base):
    """How often one organization's runs failed one way (ihub.runs.failures): one row per (org, group)."""

    __tablename__ = "failure_groups"
    __table_args__ = (UniqueConstraint("org_id", "failure_key"), Index("ix_failure_groups_last_seen", "last_seen"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    failure_key: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[int] = mapped_column(Integer)
    flow_key: Mapped[str] = mapped_column(String(100))
    step: Mapped[str] = mapped_column(String(200))
    signature: Mapped[str] = mapped_column(String(300))
    # The latest occurrence's error, as the run shows it (redacted by the engine before it was stored).
    sample_error: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())

"""API shapes of bulk replays."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ihub.common.errors import bad_request
from ihub.common.fields import IsoTime
from ihub.common.ids import IdOut
from ihub.replays.models import ReplayBatch, ReplayItem
from ihub.replays.service import DEFAULT_RATE, Preview, Selection
from ihub.runs.schemas import parse_flow
from ihub.runs.status import RunStatus


class ReplayStart(BaseModel):
    # Unknown fields are refused, not ignored: a misspelt `failure_key` ignored would widen the selection to
    # every failed run of the subtree.
    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"failureKey": "3f2a9c0d1e2b3a4f5e6d7c8b9a0f1e2d", "dryRun": True},
                {"flow": "sync-contacts", "since": "2026-11-25T00:00:00Z", "version": "current", "rate": 20},
            ]
        },
    )

    failure_key: str | None = Field(
        default=None,
        alias="failureKey",
        pattern="^[0-9a-f]{1,32}$",
        description="A failure group's key (the failure inbox lists them): its failed runs.",
    )
    flow: str | None = Field(default=None, max_length=100, description="A flow id or key.")
    since: IsoTime | None = Field(default=None, description="Runs created at or after (ISO 8601 with a zone).")
    until: IsoTime | None = Field(default=None, description="Runs created before (ISO 8601 with a zone).")
    status: Literal["failed", "cancelled", "succeeded"] = Field(
        default="failed", description="The runs' status (default failed)."
    )
    version: Literal["original", "current"] = Field(
        default="original",
        description="`original`: each run's template version; `current`: the version the project is pinned to now "
        "(replay after a fix).",
    )
    rate: int = Field(default=DEFAULT_RATE, description="Replays started per second at most (IHUB_REPLAY_MAX_RATE).")
    dry_run: bool = Field(
        default=False, alias="dryRun", description="Only say how many runs match, how many are skipped, and which."
    )

    def selection(self) -> Selection:
        return Selection(
            failure_key=self.failure_key,
            flow=parse_flow(self.flow),
            since=_aware("since", self.since),
            until=_aware("until", self.until),
            status=self.status,
        )


def _aware(name: str, when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise bad_request(f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise bad_request(f"{name} is outside the calendar once converted to UTC") from None


class SampleOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    run_id: IdOut = Field(serialization_alias="runId")
    flow_id: IdOut = Field(serialization_alias="flowId")
    flow_key: str = Field(serialization_alias="flowKey")
    created_at: datetime = Field(serialization_alias="createdAt")
    error: str | None
    failed_step: str | None = Field(serialization_alias="failedStep")
    skip: str | None = Field(description="Why it would be skipped (already_replayed | superseded), or null.")


class DryRunOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    dry_run: bool = Field(default=True, serialization_alias="dryRun")
    selected: int = Field(description="Runs the selection holds now.")
    already_replayed: int = Field(
        serialization_alias="alreadyReplayed", description="Skipped: a replay of theirs succeeded or is under way."
    )
    superseded: int = Field(description="Skipped: a replay of theirs failed (that newer attempt stands for them).")
    to_replay: int = Field(serialization_alias="toReplay")
    sample: list[SampleOut] = Field(description="The first 50 runs, in the order a batch replays them (oldest first).")


def dry_run_out(preview: Preview) -> DryRunOut:
    return DryRunOut(
        selected=preview.selected,
        already_replayed=preview.already_replayed,
        superseded=preview.superseded,
        to_replay=preview.to_replay,
        sample=[
            SampleOut(
                run_id=s.run_id,
                flow_id=s.flow_id,
                flow_key=s.flow_key,
                created_at=s.created_at,
                error=s.error,
                failed_step=s.failed_step,
                skip=s.skip,
            )
            for s in preview.sample
        ],
    )


class ItemOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    run_id: IdOut = Field(serialization_alias="runId")
    outcome: str = Field(description="replayed | skipped | failed")
    replay_run_id: IdOut | None = Field(serialization_alias="replayRunId")
    detail: str | None


class BatchOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: IdOut
    org_id: IdOut = Field(serialization_alias="orgId")
    created_by: IdOut | None = Field(serialization_alias="createdBy")
    created_at: datetime = Field(serialization_alias="createdAt")
    selection: dict[str, Any]
    version: str
    rate: int
    status: str = Field(description="pending | running | paused | done | cancelled")
    selected: int = Field(description="Runs the selection held when the batch was started.")
    replayed: int
    skipped: int
    failed: int = Field(description="Runs that could not be replayed (their flow is gone); see lastError.")
    remaining: int
    cursor: IdOut | None = Field(description="The last run handled (runs are handled oldest first).")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    last_error: str | None = Field(serialization_alias="lastError")
    worker: str | None = Field(description="The hub process working on it now.")
    items: list[ItemOut] | None = Field(default=None, description="On GET /replays/{id}: the latest 50 runs handled.")


def batch_out(batch: ReplayBatch, items: list[ReplayItem] | None = None) -> BatchOut:
    handled = batch.replayed + batch.skipped + batch.failed
    active = batch.status in {"pending", "running", "paused"}
    return BatchOut(
        id=batch.id,
        org_id=batch.org_id,
        created_by=batch.created_by,
        created_at=batch.created_at,
        selection=batch.selection,
        version=batch.version,
        rate=batch.rate,
        status=batch.status,
        selected=batch.selected,
        replayed=batch.replayed,
        skipped=batch.skipped,
        failed=batch.failed,
        remaining=max(batch.selected - handled, 0) if active else 0,
        cursor=batch.cursor or None,
        finished_at=batch.finished_at,
        last_error=batch.last_error,
        worker=batch.lease_owner if batch.status == "running" else None,
        items=[
            ItemOut(run_id=i.run_id, outcome=i.outcome, replay_run_id=i.replay_run_id, detail=i.detail) for i in items
        ]
        if items is not None
        else None,
    )


class ReplayDetail(BaseModel):
    """`{"replays": [batch]}`."""

    replays: list[BatchOut]


class ReplayList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    replays: list[BatchOut]
    next_cursor: str | None = Field(serialization_alias="nextCursor", description="Pass as ?cursor= for the next page.")


STATUSES = [RunStatus.FAILED.value, RunStatus.CANCELLED.value, RunStatus.SUCCEEDED.value]

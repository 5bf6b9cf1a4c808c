"""API shapes of runs and their step records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ihub.common.errors import ApiError
from ihub.common.ids import MAX_ID, IdOut, parse_id
from ihub.flows.definition import KEY_PATTERN
from ihub.runs.inbox import Cursor, Group
from ihub.runs.models import Run
from ihub.runs.status import RunStatus


class StepOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: IdOut
    step_id: str = Field(serialization_alias="stepId")
    path: str = Field(description="The step inside loops and branches, e.g. `each[2].create`.")
    type: str
    attempt: int
    status: str = Field(description="running | succeeded | failed | retrying | waiting | interrupted | parked")
    started_at: datetime = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    request: dict[str, Any] | None = Field(description="Request summary: truncated, secrets redacted.")
    response: dict[str, Any] | None = Field(description="Response summary: truncated, secrets redacted.")
    error: str | None


class RunOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: IdOut
    project_id: IdOut = Field(serialization_alias="projectId")
    flow_id: IdOut = Field(serialization_alias="flowId")
    flow_key: str | None = Field(serialization_alias="flowKey")
    flow_version: int = Field(serialization_alias="flowVersion")
    status: str = Field(description="queued | running | waiting_for_connection | succeeded | failed | cancelled")
    trigger_type: str = Field(serialization_alias="triggerType")
    trigger: dict[str, Any]
    result: Any = Field(description="The last `respond` step's {status, body, headers}, if any.")
    error: str | None
    replay_of: IdOut | None = Field(serialization_alias="replayOf")
    attempt: int = Field(description="How many times an executor picked the run up.")
    next_attempt_at: datetime | None = Field(serialization_alias="nextAttemptAt")
    created_at: datetime = Field(serialization_alias="createdAt")
    started_at: datetime | None = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    cancel_requested: bool = Field(serialization_alias="cancelRequested")
    worker: str | None = Field(description="The worker that holds or last held the run.")
    waiting_for_connection: str | None = Field(
        default=None,
        serialization_alias="waitingForConnection",
        description="While waiting_for_connection: the project's connection slot that needs a reconnect (it "
        "resumes by itself once reconnected).",
    )
    parked_until: datetime | None = Field(
        default=None,
        serialization_alias="parkedUntil",
        description="While waiting_for_connection: when the run fails if the connection is not reconnected.",
    )
    failed_step: str | None = Field(
        default=None,
        serialization_alias="failedStep",
        description="A failed run's failing step (loop indexes removed; empty when it failed outside a step).",
    )
    failure_key: str | None = Field(
        default=None,
        serialization_alias="failureKey",
        description="A failed run's failure group: GET /org/{id}/failures lists it, /failures/{key}/runs its runs.",
    )
    steps: list[StepOut] | None = None
    steps_next_cursor: str | None = Field(
        default=None,
        serialization_alias="stepsNextCursor",
        description="On GET /run/{id}: more step records follow; pass as ?stepsAfter= for the next ones.",
    )


class RunList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    runs: list[RunOut]
    next_cursor: str | None = Field(serialization_alias="nextCursor", description="Pass as ?cursor= for the next page.")


class RunDetail(BaseModel):
    """`{"runs": [run]}`: one run, with `steps` on GET /run/{id}."""

    runs: list[RunOut]


class RunCreated(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    run_id: IdOut = Field(serialization_alias="runId")
    flow_id: IdOut = Field(serialization_alias="flowId")
    status: str


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"version": "current"}, {}]})

    version: Literal["original", "current"] = Field(
        default="original",
        description="`original`: the template version the replayed run started on; `current`: the version the "
        "project is pinned to now.",
    )


# -- query parameters of the run list: each refused with a 400 that says what is expected ----------------------


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request")


def parse_cursor(cursor: str | None, name: str = "cursor") -> int | None:
    """A cursor is a record id; anything else (`²`, a sign, a number past the id range) is refused."""
    if cursor is None:
        return None
    try:
        return parse_id(cursor)
    except ValueError:
        raise _invalid(f"{name} must be the cursor of a previous answer (a decimal id up to {MAX_ID})") from None


def parse_flow(flow: str | None) -> str | None:
    """A flow id (ASCII digits, within the id range) or a flow key; the service tells them apart by digits."""
    if flow is None:
        return None
    if flow.isascii() and flow.isdigit():
        try:
            return str(parse_id(flow))
        except ValueError:
            raise _invalid(f"flow must be a flow id from 1 to {MAX_ID} or a flow key") from None
    if KEY_PATTERN.fullmatch(flow) is None:
        raise _invalid("flow must be a flow id or a flow key (letters, digits, _ and -)")
    return flow


def parse_since(since: datetime | None, name: str = "since") -> datetime | None:
    """An aware time that exists in UTC: `9999-12-31T23:59:59-23:59` parses but is past the calendar's end."""
    if since is None:
        return None
    if since.tzinfo is None:
        raise _invalid(f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return since.astimezone(UTC)
    except OverflowError:
        raise _invalid(f"{name} is outside the calendar once converted to UTC (years 1 to 9999)") from None


def step_out(record: Any) -> StepOut:
    """A step record (an ORM object or a row of runs.service.SHOWN_STEP_COLUMNS) as shown to people.

    record.state (what later steps see) is never shown: only the redacted summaries are. Built without
    validation: every value comes from the hub's own columns, already of the declared types, and validating
    them again was half the CPU of a 500-step page.
    """
    return StepOut.model_construct(
        id=record.id,
        step_id=record.step_id,
        path=record.path,
        type=record.type,
        attempt=record.attempt,
        status=record.status,
        started_at=record.started_at,
        finished_at=record.finished_at,
        request=record.request,
        response=record.response,
        error=record.error,
    )


def run_out(run: Run, flow_key: str | None, steps: Sequence[Any] | None = None) -> RunOut:
    return RunOut(
        id=run.id,
        project_id=run.project_id,
        flow_id=run.flow_id,
        flow_key=flow_key,
        flow_version=run.flow_version,
        status=run.status,
        trigger_type=run.trigger_type,
        trigger=run.trigger or {},
        result=run.result,
        error=run.error,
        replay_of=run.replay_of,
        attempt=run.attempt,
        next_attempt_at=run.next_attempt_at,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        cancel_requested=bool(run.cancel_requested),
        worker=run.lease_owner,
        waiting_for_connection=run.waiting_for_slot if run.status == RunStatus.WAITING_FOR_CONNECTION else None,
        parked_until=run.parked_until if run.status == RunStatus.WAITING_FOR_CONNECTION else None,
        failed_step=run.failed_step,
        failure_key=run.failure_key,
        steps=[step_out(s) for s in steps] if steps is not None else None,
    )


# -- the failure inbox (ihub.runs.inbox) -------------------------------------------------------------------


class FailureOrgOut(BaseModel):
    id: IdOut
    name: str
    count: int = Field(description="Failures of this group in this organization since it was first seen there.")


class FailureGroupOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str = Field(description="The group's key (32 hex digits): runs that failed the same way share it.")
    template_id: IdOut = Field(serialization_alias="templateId")
    template_name: str | None = Field(serialization_alias="templateName")
    flow_key: str = Field(serialization_alias="flowKey")
    step: str = Field(description="The failing step's path without loop indexes; empty: failed outside a step.")
    signature: str = Field(description="The error with what varies between occurrences replaced by `…`.")
    sample_error: str = Field(serialization_alias="sampleError", description="The latest occurrence's error.")
    count: int = Field(
        description="Failures in the caller's subtree since first seen (runs purged by retention stay counted)."
    )
    first_seen: datetime = Field(serialization_alias="firstSeen")
    last_seen: datetime = Field(serialization_alias="lastSeen")
    organizations: list[FailureOrgOut] = Field(
        description="The organizations of the caller's subtree affected, most failures first (at most 10)."
    )
    organization_count: int = Field(
        serialization_alias="organizationCount", description="How many organizations of the subtree are affected."
    )


class FailureGroupList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    failures: list[FailureGroupOut]
    next_cursor: str | None = Field(serialization_alias="nextCursor", description="Pass as ?cursor= for the next page.")


def failure_group_out(group: Group) -> FailureGroupOut:
    """A group of ihub.runs.inbox as the API shows it."""
    return FailureGroupOut(
        key=group.key,
        template_id=group.template_id,
        template_name=group.template_name,
        flow_key=group.flow_key,
        step=group.step,
        signature=group.signature,
        sample_error=group.sample_error,
        count=group.count,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        organizations=[FailureOrgOut(id=org.org_id, name=org.name, count=org.count) for org in group.orgs],
        organization_count=group.org_count,
    )


def parse_template_id(template: str | None) -> int | None:
    if template is None:
        return None
    try:
        return parse_id(template)
    except ValueError:
        raise _invalid(f"template must be a template id from 1 to {MAX_ID}") from None


def parse_inbox_cursor(cursor: str | None) -> Cursor | None:
    if cursor is None:
        return None
    parsed = Cursor.decode(cursor)
    if parsed is None:
        raise _invalid("cursor must be the nextCursor of a previous answer")
    return parsed

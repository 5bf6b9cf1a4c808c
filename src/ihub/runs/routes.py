"""`/api/v1` routes for runs: list, show, replay, cancel, and the manual trigger of a flow."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.body import json_or_form, read_body, request_body
from ihub.common.context import Context, Session
from ihub.common.errors import ApiError
from ihub.common.fields import IsoTime
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.provisioning.deps import Caller
from ihub.runs import inbox, service
from ihub.runs.schemas import (
    FailureGroupList,
    ReplayRequest,
    RunCreated,
    RunDetail,
    RunList,
    failure_group_out,
    parse_cursor,
    parse_flow,
    parse_inbox_cursor,
    parse_since,
    parse_template_id,
    run_out,
)
from ihub.runs.status import RunStatus

router = APIRouter(prefix="/api/v1", tags=["runs"], responses=errors(400, 401, 404))


def run_filters(
    status: Annotated[
        str | None, Query(description="queued | running | waiting_for_connection | succeeded | failed | cancelled")
    ] = None,
    flow: Annotated[str | None, Query(description="A flow id or key.")] = None,
    since: Annotated[IsoTime | None, Query(description="Only runs created at or after (ISO 8601).")] = None,
    until: Annotated[IsoTime | None, Query(description="Only runs created before (ISO 8601).")] = None,
) -> service.RunFilter:
    """The filters every runs list takes, checked once (400 for a bad one)."""
    if status is not None and status not in {member.value for member in RunStatus}:
        raise ApiError(400, f"status must be one of {', '.join(RunStatus)}", "invalid_request")
    return service.RunFilter(status, parse_flow(flow), parse_since(since), parse_since(until, "until"))


RunFilters = Annotated[service.RunFilter, Depends(run_filters)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(description="nextCursor of the previous page.")]


async def run_list(session: AsyncSession, page: service.RunPage) -> RunList:
    keys = await service.flow_keys(session, {r.flow_id for r in page.runs})
    older = page.older
    return RunList(runs=[run_out(r, keys.get(r.flow_id)) for r in page.runs], next_cursor=str(older) if older else None)


@router.get("/project/{project_id}/runs", response_model=RunList, response_model_by_alias=True)
async def list_runs(
    project_id: str, caller: Caller, session: Session, filters: RunFilters, limit: Limit = 50, cursor: Cursor = None
) -> RunList:
    """A project's runs, newest first, in pages (keyset pagination). Every filter reads an index: a page costs
    about the same however few runs match."""
    pid = path_id(project_id, "project")
    await service.visible_project_path(session, caller, pid)
    page = await service.page_runs(session, filters, project_id=pid, limit=limit, before=parse_cursor(cursor))
    return await run_list(session, page)


@router.get("/org/{org_id}/runs", response_model=RunList, response_model_by_alias=True)
async def list_org_runs(
    org_id: str, caller: Caller, session: Session, filters: RunFilters, limit: Limit = 50, cursor: Cursor = None
) -> RunList:
    """The runs of every project in an organization's subtree (one the caller sees), newest first, in pages,
    with the same filters as a project's list; a flow key matches that flow in every project of the subtree."""
    path = await service.visible_org_path(session, caller, path_id(org_id, "organization"))
    page = await service.page_runs(session, filters, org_path=path, limit=limit, before=parse_cursor(cursor))
    return await run_list(session, page)


@router.get("/run/{run_id}", response_model=RunDetail)
async def get_run(
    run_id: str,
    caller: Caller,
    session: Session,
    steps_after: Annotated[
        str | None, Query(alias="stepsAfter", description="stepsNextCursor of the previous answer.")
    ] = None,
) -> RunDetail:
    """A run with a record per step attempt (request/response summaries are truncated and redacted), at most
    100 records per answer in execution order; `stepsNextCursor` fetches the next ones."""
    run = await service.visible_run(session, caller, path_id(run_id, "run"))
    keys = await service.flow_keys(session, {run.flow_id})
    steps, next_steps = await service.step_records(session, run.id, after=parse_cursor(steps_after, "stepsAfter"))
    detail = run_out(run, keys.get(run.flow_id), steps)
    detail.steps_next_cursor = str(next_steps) if next_steps else None
    return RunDetail(runs=[detail])


@router.post(
    "/run/{run_id}/replay",
    status_code=202,
    response_model=RunCreated,
    responses=errors(409),
    openapi_extra=request_body(ReplayRequest, example={"version": "original"}, required=False),
)
async def replay_run(
    run_id: str,
    caller: Caller,
    session: Session,
    context: Context,
    body: ReplayRequest = json_or_form(ReplayRequest),
) -> RunCreated:
    """A new run of the same flow with the same trigger payload, on the template version the run started on
    (`{"version": "original"}`, the default; the body may be left out) or on the project's pinned version
    (`{"version": "current"}`)."""
    original = await service.visible_run(session, caller, path_id(run_id, "run"))
    run = await service.replay_and_dispatch(session, context, original, body.version)
    return RunCreated(run_id=run.id, flow_id=run.flow_id, status=run.status)


@router.post("/run/{run_id}/cancel", response_model=RunDetail, responses=errors(409))
async def cancel_run(run_id: str, caller: Caller, session: Session) -> RunDetail:
    """Cancel a queued run now, or a running one before its next step (409 when it already finished)."""
    run = await service.visible_run(session, caller, path_id(run_id, "run"))
    run = await service.cancel_run(session, run)
    keys = await service.flow_keys(session, {run.flow_id})
    return RunDetail(runs=[run_out(run, keys.get(run.flow_id))])


@router.post(
    "/flow/{flow_id}/run",
    status_code=202,
    response_model=RunCreated,
    responses=errors(409),
    openapi_extra=request_body(
        dict[str, Any],
        name="FlowTriggerBody",
        example={"issueKey": "INC0010042", "summary": "Mail server down", "description": "Users cannot send mail."},
    ),
)
async def run_flow(flow_id: str, request: Request, caller: Caller, session: Session, context: Context) -> RunCreated:
    """Trigger a flow by hand with a JSON body (it becomes `trigger.body`); answers 202 with the run id."""
    loaded = await service.visible_flow(session, caller, path_id(flow_id, "flow"))
    body = await read_body(request)
    content_type = request.headers.get("content-type", "application/json")
    run = await service.run_now(session, context, caller, loaded, body, content_type=content_type)
    return RunCreated(run_id=run.id, flow_id=run.flow_id, status=run.status)


@router.get("/org/{org_id}/failures", response_model=FailureGroupList, tags=["failures"])
async def list_failures(
    org_id: str,
    caller: Caller,
    session: Session,
    flow: Annotated[str | None, Query(description="Only groups of this flow key.")] = None,
    template: Annotated[str | None, Query(description="Only groups of this template id.")] = None,
    since: Annotated[IsoTime | None, Query(description="Only groups that failed at or after (ISO 8601).")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> FailureGroupList:
    """The failure inbox: failed runs of the organization and its sub-organizations grouped by (template, flow,
    failing step, error signature), the group last seen most recently first. Counts, first and last seen and
    the organizations listed are those of this subtree only."""
    path = await service.visible_org_path(session, caller, path_id(org_id, "organization"))
    flow_key = parse_flow(flow)
    if flow_key is not None and flow_key.isdigit():
        raise ApiError(400, "flow must be a flow key (groups are kept per flow key, not flow id)", "invalid_request")
    filters = inbox.InboxFilter(
        flow_key=flow_key,
        template_id=parse_template_id(template),
        since=parse_since(since),
    )
    page = await inbox.groups(session, path, filters, limit=limit, cursor=parse_inbox_cursor(cursor))
    return FailureGroupList(
        failures=[failure_group_out(group) for group in page.groups],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )


@router.get("/org/{org_id}/failures/{failure_key}/runs", response_model=RunList, tags=["failures"])
async def list_failure_runs(
    org_id: str,
    failure_key: str,
    caller: Caller,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> RunList:
    """The runs of one failure group in the organization's subtree, newest first (keyset pagination). A group
    the subtree never had is a 404."""
    path = await service.visible_org_path(session, caller, path_id(org_id, "organization"))
    # A malformed key names no group, like a key only other tenants have: 404 either way.
    if not inbox.is_key(failure_key) or not await inbox.group_in_subtree(session, path, failure_key):
        raise ApiError(404, f"failure group {failure_key!r} not found", "not_found")
    page = await inbox.group_runs(session, path, failure_key, limit=limit, before=parse_cursor(cursor))
    keys = await service.flow_keys(session, {r.flow_id for r in page.runs})
    return RunList(
        runs=[run_out(r, keys.get(r.flow_id)) for r in page.runs],
        next_cursor=str(page.older) if page.older else None,
    )

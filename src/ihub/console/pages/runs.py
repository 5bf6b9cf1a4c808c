"""Runs: the runs of a project or of an organization's subtree (filtered by status, flow and time, in keyset
pages), one run with its step timeline, and Replay / Cancel.

Filters are GET query parameters, so a filtered list is a URL to keep or share. What a run and its step records
show is `ihub.runs.schemas.run_out`, the very objects `GET /api/v1/run/{id}` answers with: request and response
summaries appear truncated and redacted exactly as the API returns them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from ihub.common.context import Context, Session
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.projects.service import visible_project
from ihub.runs import service
from ihub.runs.inbox import is_key
from ihub.runs.schemas import parse_cursor, parse_flow, run_out
from ihub.runs.status import TERMINAL_RUN_STATUSES, RunStatus

router = APIRouter()

PAGE_SIZE = 50
# How often a page showing an unfinished run reloads itself (static/console.js, data-refresh).
REFRESH_SECONDS = 3


@dataclass(frozen=True)
class Filters:
    """The list's query parameters as typed (for the form) and as the service reads them."""

    status: str
    flow: str
    since: str
    until: str
    # A failure group's key (the failure inbox's "Runs" link): its runs only.
    failure: str = ""

    def query(self, **cursor: int | None) -> str:
        values = {
            "status": self.status,
            "flow": self.flow,
            "since": self.since,
            "until": self.until,
            "failure": self.failure,
        }
        values.update({name: str(value) for name, value in cursor.items() if value is not None})
        kept = {name: value for name, value in values.items() if value}
        return "?" + urlencode(kept) if kept else "?"

    @property
    def active(self) -> bool:
        return bool(self.status or self.flow or self.since or self.until or self.failure)


@dataclass(frozen=True)
class ListQuery:
    """A runs list's whole query string: the filters and the cursor of the page."""

    filters: Filters
    before: str | None
    after: str | None


def list_query(
    status: str = "",
    flow: str = "",
    since: str = "",
    until: str = "",
    failure: str = "",
    before: str | None = None,
    after: str | None = None,
) -> ListQuery:
    return ListQuery(Filters(status, flow.strip(), since, until, failure.strip()), before, after)


Listing = Annotated[ListQuery, Depends(list_query)]


def parse_time(value: str, name: str) -> datetime | None:
    """A `datetime-local` field (no zone: UTC, as the page says) or a full ISO 8601 time."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a date and time like 2026-01-31T14:00", "invalid_request") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 parses, but is past the calendar's end in UTC
        raise ApiError(400, f"{name} is outside the calendar once converted to UTC", "invalid_request") from None


def service_filter(filters: Filters) -> service.RunFilter:
    if filters.status and filters.status not in {member.value for member in RunStatus}:
        raise ApiError(400, f"status must be one of {', '.join(RunStatus)}", "invalid_request")
    if filters.failure and not is_key(filters.failure):
        raise ApiError(
            400, "failure must be the key of a group of the failure inbox (32 hex digits)", "invalid_request"
        )
    return service.RunFilter(
        status=filters.status or None,
        flow=parse_flow(filters.flow or None),
        since=parse_time(filters.since, "From"),
        until=parse_time(filters.until, "Until"),
        failure_key=filters.failure or None,
    )


async def runs_page(
    request: Request,
    session: Session,
    viewer: Viewer,
    *,
    org_id: int,
    project: Any | None,
    listing: ListQuery,
) -> HTMLResponse:
    filters, before, after = listing.filters, listing.before, listing.after
    shell = await load_shell(session, viewer, org_id, "runs")
    scope: dict[str, Any] = {"project_id": project.id} if project is not None else {"org_path": shell.org.path}
    page = await service.page_runs(
        session,
        service_filter(filters),
        limit=PAGE_SIZE,
        before=parse_cursor(before, "before"),
        after=parse_cursor(after, "after"),
        **scope,
    )
    keys = await service.flow_keys(session, {run.flow_id for run in page.runs})
    projects = await service.project_names(session, {run.project_id for run in page.runs}) if project is None else {}
    base = f"/console/project/{project.id}/runs" if project is not None else f"/console/org/{shell.org.id}/runs"
    first_page = before is None and after is None
    live = first_page and any(run.status not in TERMINAL_RUN_STATUSES for run in page.runs)
    return render(
        request,
        "runs.html",
        **shell.context(),
        project=project,
        runs=page.runs,
        flow_keys=keys,
        project_names=projects,
        flows=await service.flows_in(session, **scope),
        statuses=[member.value for member in RunStatus],
        filters=filters,
        base=base,
        older_url=base + filters.query(before=page.older) if page.older else None,
        newer_url=base + filters.query(after=page.newer) if page.newer else None,
        refresh=REFRESH_SECONDS if live else None,
    )


@router.get("/project/{project_id}/runs")
async def project_runs(
    request: Request, project_id: str, viewer: SignedIn, session: Session, listing: Listing
) -> HTMLResponse:
    project = await visible_project(session, viewer.principal, path_id(project_id, "project"))
    return await runs_page(request, session, viewer, org_id=project.org_id, project=project, listing=listing)


@router.get("/org/{org_id}/runs")
async def org_runs(request: Request, org_id: str, viewer: SignedIn, session: Session, listing: Listing) -> HTMLResponse:
    org = path_id(org_id, "organization")
    return await runs_page(request, session, viewer, org_id=org, project=None, listing=listing)


@router.get("/run/{run_id}")
async def show_run(
    request: Request, run_id: str, viewer: SignedIn, session: Session, steps_after: str | None = None
) -> HTMLResponse:
    run = await service.visible_run(session, viewer.principal, path_id(run_id, "run"))
    project = await visible_project(session, viewer.principal, run.project_id)
    shell = await load_shell(session, viewer, project.org_id, "runs")
    keys = await service.flow_keys(session, {run.flow_id})
    steps, next_steps = await service.step_records(session, run.id, after=parse_cursor(steps_after, "steps_after"))
    detail = run_out(run, keys.get(run.flow_id), steps)
    finished = run.status in TERMINAL_RUN_STATUSES
    return render(
        request,
        "run.html",
        **shell.context(),
        run=detail,
        project=project,
        finished=finished,
        can_cancel=not finished and not run.cancel_requested,
        steps_next=f"/console/run/{run.id}?steps_after={next_steps}" if next_steps else None,
        # A parked run may wait for days: it is not reloaded every few seconds meanwhile.
        refresh=None if finished or run.status == RunStatus.WAITING_FOR_CONNECTION else REFRESH_SECONDS,
    )


@router.post("/run/{run_id}/replay")
async def replay(
    request: Request,
    run_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    version: Annotated[str, Form(max_length=20)] = "original",
) -> Response:
    original = await service.visible_run(session, viewer.principal, path_id(run_id, "run"))
    run = await service.replay_and_dispatch(session, context, original, version)
    return redirect(request, f"/console/run/{run.id}", f"Run {run.id} replays run {original.id} ({version} version).")


@router.post("/run/{run_id}/cancel")
async def cancel(request: Request, run_id: str, viewer: Acting, session: Session) -> Response:
    run = await service.visible_run(session, viewer.principal, path_id(run_id, "run"))
    run = await service.cancel_run(session, run)
    message = {
        RunStatus.CANCELLED: f"Run {run.id} is cancelled.",
        RunStatus.RUNNING: f"Run {run.id} stops before its next step.",
    }.get(RunStatus(run.status), f"Run {run.id} finished before it could be cancelled: {run.status}.")
    return redirect(request, f"/console/run/{run.id}", message)

"""`ihub runs list|show|replay` and `ihub failures list|runs`: run history and the failure inbox from the server's
shell (Rich tables, or --json for scripts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ihub.common.cli_support import JsonFlag, fail, with_session
from ihub.runs.status import RunStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.common.crypto import SecretBox

T = TypeVar("T")

app = typer.Typer(help="Inspect and replay flow runs.", no_args_is_help=True)
failures_app = typer.Typer(
    help="The failure inbox: failed runs grouped by flow, failing step and error.", no_args_is_help=True
)
console = Console()

STATUS_STYLE: dict[str, str] = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.QUEUED: "blue",
}


def _id(value: str, kind: str, as_json: bool) -> int:
    from ihub.common.ids import parse_id

    try:
        return parse_id(value)
    except ValueError:
        fail(f"{kind} id must be a decimal number, got {value!r}", as_json)


def _run(work: Callable[[AsyncSession, SecretBox], Awaitable[T]]) -> T:

    return asyncio.run(with_session(work))


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _duration(run: dict[str, Any]) -> str:
    from datetime import datetime

    if not run.get("startedAt") or not run.get("finishedAt"):
        return ""
    seconds = (datetime.fromisoformat(run["finishedAt"]) - datetime.fromisoformat(run["startedAt"])).total_seconds()
    return f"{seconds:.2f}s"


@app.command("list")
def list_runs(
    project: Annotated[str, typer.Option("--project", help="Project id.")],
    status: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")] = None,
    flow: Annotated[str | None, typer.Option(help="Flow id or key.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of a previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A project's runs, newest first."""
    from ihub.runs import service
    from ihub.runs.schemas import RunList, run_out

    project_id = _id(project, "project", as_json)
    after = _id(cursor, "cursor", as_json) if cursor else None

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        runs, next_cursor = await service.list_runs(
            session, project_id, status=status, flow=flow, limit=limit, cursor=after
        )
        keys = await service.flow_keys(session, {r.flow_id for r in runs})
        page = RunList(
            runs=[run_out(r, keys.get(r.flow_id)) for r in runs], next_cursor=str(next_cursor) if next_cursor else None
        )
        return page.model_dump(mode="json", by_alias=True)

    page = _run(work)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title=f"runs of project {project_id}")
    for column in ("id", "flow", "status", "trigger", "created", "duration", "error"):
        table.add_column(column)
    for run in page["runs"]:
        table.add_row(
            run["id"],
            run["flowKey"] or run["flowId"],
            _styled(run["status"]),
            run["triggerType"],
            run["createdAt"][:19],
            _duration(run),
            (run["error"] or "")[:60],
        )
    console.print(table)
    if page["nextCursor"]:
        console.print(f"more: --cursor {page['nextCursor']}")


@app.command("show")
def show_run(run_id: Annotated[str, typer.Argument(help="Run id.")], as_json: JsonFlag = False) -> None:
    """A run with its step attempts."""
    from ihub.runs import service
    from ihub.runs.models import Run
    from ihub.runs.schemas import run_out

    rid = _id(run_id, "run", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any] | None:
        run = await session.get(Run, rid)
        if run is None:
            return None
        keys = await service.flow_keys(session, {run.flow_id})
        # An operator's view shows every record: page through them all.
        steps, after = await service.step_records(session, run.id)
        while after is not None:
            page, after = await service.step_records(session, run.id, after=after)
            steps += page
        return run_out(run, keys.get(run.flow_id), steps).model_dump(mode="json", by_alias=True)

    run = _run(work)
    if run is None:
        fail(f"run {rid} not found", as_json)
    if as_json:
        print(json.dumps(run))
        return
    console.print(
        f"run [bold]{run['id']}[/] flow {run['flowKey']} ({run['flowId']}) v{run['flowVersion']}: "
        f"{_styled(run['status'])} {_duration(run)}  trigger={run['triggerType']}"
        + (f"  replay of {run['replayOf']}" if run["replayOf"] else "")
    )
    if run["error"]:
        console.print(f"[red]error:[/] {run['error']}")
    if run["result"] is not None:
        console.print(f"result: {json.dumps(run['result'])[:500]}")
    table = Table()
    for column in ("step", "type", "attempt", "status", "request", "response", "error"):
        table.add_column(column)
    for step in run["steps"] or []:
        request = step["request"] or {}
        response = step["response"] or {}
        table.add_row(
            step["path"],
            step["type"],
            str(step["attempt"]),
            _styled(step["status"]),
            f"{request.get('method', '')} {request.get('url', '')}".strip(),
            str(response.get("status", "")) if "status" in response else json.dumps(response.get("output"))[:40],
            (step["error"] or "")[:60],
        )
    console.print(table)


@app.command("replay")
def replay(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    version: Annotated[
        str, typer.Option("--version", help="original (the version the run started on) or current (the pinned one).")
    ] = "original",
    as_json: JsonFlag = False,
) -> None:
    """Start a new run of the same flow with the same trigger payload, on the template version the run started
    on (or the project's pinned one with --version current)."""
    from ihub.common.errors import ApiError
    from ihub.db.unit_of_work import after_commit
    from ihub.runs import service
    from ihub.runs.models import Run

    rid = _id(run_id, "run", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        original = await session.get(Run, rid)
        if original is None:
            raise ApiError(404, f"run {rid} not found")
        run = await service.replay_run(session, original, version)
        # The queue job names a run that must exist: hand it off once with_session has committed.
        after_commit(session, partial(_hand_off, run.id))
        return {
            "runId": str(run.id),
            "flowId": str(run.flow_id),
            "status": run.status,
            "replayOf": str(rid),
            "flowVersion": run.flow_version,
        }

    try:
        result = _run(work)
    except ApiError as error:
        fail(error.message, as_json)
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"run {result['runId']} queued (replay of {rid}); the hub's executor picks it up")


async def _hand_off(run_id: int) -> None:
    """With procrastinate, defer the job now; the local executor of a running `ihub serve` polls for it."""
    from ihub.config import get_settings

    settings = get_settings()
    if settings.executor != "procrastinate":
        return
    from ihub.app import build_context
    from ihub.executors.procrastinate_executor import ProcrastinateExecutor

    context = build_context(settings)
    executor = ProcrastinateExecutor(context, run_worker=False)
    await executor.start()
    try:
        await executor.submit(run_id)
    finally:
        await executor.stop()
        await context.engine.dispose()


async def _org_path(session: AsyncSession, org: str | None, as_json: bool) -> str:
    """The subtree's path: --org's, or every organization of the hub without it (the shell sees all)."""
    from sqlalchemy import select

    from ihub.tenancy.models import Organization

    if org is None:
        return "/"
    org_id = _id(org, "organization", as_json)
    path = await session.scalar(select(Organization.path).where(Organization.id == org_id))
    if path is None:
        from ihub.common.errors import not_found

        raise not_found("organization", org_id)
    return path


@failures_app.command("list")
def list_failures(
    org: Annotated[str | None, typer.Option("--org", help="Organization id (its subtree); default: all.")] = None,
    flow: Annotated[str | None, typer.Option(help="Only groups of this flow key.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of a previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Failure groups, the one that failed most recently first, with counts and the organizations affected."""
    from ihub.common.cli_support import run_work
    from ihub.runs import inbox
    from ihub.runs.schemas import FailureGroupList, failure_group_out

    after = inbox.Cursor.decode(cursor) if cursor else None
    if cursor and after is None:
        fail("cursor must be the nextCursor of a previous page", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        path = await _org_path(session, org, as_json)
        page = await inbox.groups(session, path, inbox.InboxFilter(flow_key=flow), limit=limit, cursor=after)
        listed = FailureGroupList(
            failures=[failure_group_out(group) for group in page.groups],
            next_cursor=page.next_cursor.encode() if page.next_cursor else None,
        )
        return listed.model_dump(mode="json", by_alias=True)

    page = run_work(work, as_json)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title="failure groups" + (f" of organization {org}" if org else ""))
    # The key is what `ihub failures runs KEY` takes: never wrapped or cut, whatever the terminal's width.
    table.add_column("key", no_wrap=True, min_width=inbox.KEY_LENGTH)
    for column in ("flow", "step", "count", "last seen", "first seen", "organizations", "error"):
        table.add_column(column)
    for group in page["failures"]:
        orgs = ", ".join(f"{o['name']} ({o['count']})" for o in group["organizations"][:3])
        more = len(group["organizations"]) - 3
        table.add_row(
            group["key"],
            group["flowKey"],
            group["step"] or "-",
            str(group["count"]),
            group["lastSeen"][:19],
            group["firstSeen"][:19],
            orgs + (f" +{more}" if more > 0 else ""),
            group["signature"][:60],
        )
    console.print(table)
    if page["nextCursor"]:
        console.print(f"more: --cursor {page['nextCursor']}")


@failures_app.command("runs")
def failure_runs(
    key: Annotated[str, typer.Argument(help="The group's key (from `ihub failures list`).")],
    org: Annotated[str | None, typer.Option("--org", help="Organization id (its subtree); default: all.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of a previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The runs of one failure group, newest first."""
    from ihub.common.cli_support import run_work
    from ihub.common.errors import ApiError
    from ihub.runs import inbox, service
    from ihub.runs.schemas import RunList, run_out

    if not inbox.is_key(key):
        fail(f"a failure key is 32 lowercase hex digits, got {key!r}", as_json)
    before = _id(cursor, "cursor", as_json) if cursor else None

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        path = await _org_path(session, org, as_json)
        if not await inbox.group_in_subtree(session, path, key):
            raise ApiError(404, f"failure group {key} not found", "not_found")
        page = await inbox.group_runs(session, path, key, limit=limit, before=before)
        keys = await service.flow_keys(session, {r.flow_id for r in page.runs})
        listed = RunList(
            runs=[run_out(r, keys.get(r.flow_id)) for r in page.runs],
            next_cursor=str(page.older) if page.older else None,
        )
        return listed.model_dump(mode="json", by_alias=True)

    page = run_work(work, as_json)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title=f"runs of failure group {key}")
    for column in ("id", "project", "flow", "created", "error"):
        table.add_column(column)
    for run in page["runs"]:
        table.add_row(
            run["id"], run["projectId"], run["flowKey"] or run["flowId"], run["createdAt"][:19], run["error"] or ""
        )
    console.print(table)
    if page["nextCursor"]:
        console.print(f"more: --cursor {page['nextCursor']}")

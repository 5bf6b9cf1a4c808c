"""`ihub replay start|show|list|pause|resume|cancel`: bulk replay from the server's shell.

The shell is the operator's: it sees every organization (as the other shell commands do) and a batch it starts
has no `createdBy`. It writes the batch to the database; a running `ihub serve` (any process with workers)
replays it at its next poll (IHUB_REPLAY_POLL_INTERVAL).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ihub.common.cli_support import JsonFlag, fail, run_work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.common.crypto import SecretBox

app = typer.Typer(help="Replay many runs at once: a failure group or a filter.", no_args_is_help=True)
console = Console()


def _id(value: str, kind: str, as_json: bool) -> int:
    from ihub.common.ids import parse_id

    try:
        return parse_id(value)
    except ValueError:
        fail(f"{kind} id must be a decimal number, got {value!r}", as_json)


def _time(value: str | None, name: str, as_json: bool) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"--{name} must be an ISO 8601 time with a zone, e.g. 2026-01-01T00:00:00Z", as_json)


def _print_batch(batch: dict[str, Any]) -> None:
    console.print(
        f"replay {batch['id']}: [bold]{batch['status']}[/] — {batch['replayed']} replayed, {batch['skipped']} "
        f"skipped, {batch['failed']} failed, {batch['remaining']} remaining of {batch['selected']} "
        f"(version {batch['version']}, {batch['rate']}/s)"
    )
    if batch.get("lastError"):
        console.print(f"last error: {batch['lastError']}")


@app.command("start")
def start(
    org: Annotated[str, typer.Option("--org", help="Organization id: runs of its subtree.")],
    failure_key: Annotated[str | None, typer.Option("--failure-key", help="A failure group's key.")] = None,
    flow: Annotated[str | None, typer.Option(help="Flow id or key.")] = None,
    since: Annotated[str | None, typer.Option(help="Runs created at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Runs created before (ISO 8601).")] = None,
    status: Annotated[str, typer.Option(help="failed | cancelled | succeeded")] = "failed",
    version: Annotated[str, typer.Option(help="original | current")] = "original",
    rate: Annotated[
        int | None, typer.Option(help="Replays per second (default 10, at most IHUB_REPLAY_MAX_RATE).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say how many and which.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a bulk replay (or, with --dry-run, show what it would replay)."""
    from pydantic import ValidationError

    from ihub.replays import service
    from ihub.replays.schemas import ReplayStart, batch_out, dry_run_out

    org_id = _id(org, "organization", as_json)
    try:
        fields = {
            "failureKey": failure_key,
            "flow": flow,
            "since": _time(since, "since", as_json),
            "until": _time(until, "until", as_json),
            "status": status,
            "version": version,
            "rate": rate,
            "dryRun": dry_run,
        }
        request = ReplayStart.model_validate({name: value for name, value in fields.items() if value is not None})
    except ValidationError as error:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()), as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        from ihub.config import get_settings

        path = await service.org_path(session, org_id)
        selection = request.selection()
        if request.dry_run:
            return dry_run_out(
                await service.preview(session, path, selection, max_runs=get_settings().replay_max_runs)
            ).model_dump(mode="json", by_alias=True)
        batch = await service.start(
            session,
            get_settings(),
            org_id=org_id,
            org_path=path,
            selection=selection,
            version=request.version,
            rate=request.rate,
            created_by=None,
        )
        return batch_out(batch).model_dump(mode="json", by_alias=True)

    result = run_work(work, as_json)
    if as_json:
        print(json.dumps(result))
        return
    if dry_run:
        console.print(
            f"{result['selected']} runs selected: {result['toReplay']} to replay, {result['alreadyReplayed']} already "
            f"replayed, {result['superseded']} superseded by a failed replay"
        )
        table = Table(title="first runs (oldest first)")
        for column in ("run", "flow", "created", "step", "error", "skip"):
            table.add_column(column)
        for run in result["sample"]:
            table.add_row(
                run["runId"],
                run["flowKey"],
                run["createdAt"][:19],
                run["failedStep"] or "",
                (run["error"] or "")[:60],
                run["skip"] or "",
            )
        console.print(table)
        return
    _print_batch(result)
    console.print("a running hub replays it; follow it with: ihub replay show " + result["id"])


@app.command("show")
def show(replay_id: Annotated[str, typer.Argument(help="Replay id.")], as_json: JsonFlag = False) -> None:
    """A bulk replay's progress and the latest runs it handled."""
    from ihub.replays import service
    from ihub.replays.schemas import batch_out

    bid = _id(replay_id, "replay", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        batch = await service.visible_batch(session, None, bid)
        return batch_out(batch, await service.items(session, bid)).model_dump(mode="json", by_alias=True)

    batch = run_work(work, as_json)
    if as_json:
        print(json.dumps(batch))
        return
    _print_batch(batch)
    table = Table(title="latest runs handled")
    for column in ("run", "outcome", "replay", "detail"):
        table.add_column(column)
    for item in batch["items"]:
        table.add_row(item["runId"], item["outcome"], item["replayRunId"] or "", item["detail"] or "")
    console.print(table)


@app.command("list")
def list_batches(
    org: Annotated[str, typer.Option("--org", help="Organization id (its subtree's replays).")] = "1",
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Bulk replays of an organization's subtree, newest first."""
    from ihub.replays import service
    from ihub.replays.schemas import batch_out

    org_id = _id(org, "organization", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> list[dict[str, Any]]:
        batches, _more = await service.list_batches(session, await service.org_path(session, org_id), limit=limit)
        return [batch_out(b).model_dump(mode="json", by_alias=True) for b in batches]

    batches = run_work(work, as_json)
    if as_json:
        print(json.dumps({"replays": batches}))
        return
    table = Table(title=f"bulk replays of organization {org_id}")
    for column in ("id", "status", "selection", "version", "replayed", "skipped", "failed", "remaining", "created"):
        table.add_column(column)
    for b in batches:
        selection = ", ".join(f"{k}={v}" for k, v in b["selection"].items() if v)
        table.add_row(
            b["id"],
            b["status"],
            selection,
            b["version"],
            str(b["replayed"]),
            str(b["skipped"]),
            str(b["failed"]),
            str(b["remaining"]),
            b["createdAt"][:19],
        )
    console.print(table)


def _transition(replay_id: str, action: str, as_json: bool) -> None:
    from ihub.replays import service
    from ihub.replays.schemas import batch_out

    bid = _id(replay_id, "replay", as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        batch = await service.visible_batch(session, None, bid)
        changed = await {"pause": service.pause, "resume": service.resume, "cancel": service.cancel}[action](
            session, batch
        )
        return batch_out(changed).model_dump(mode="json", by_alias=True)

    batch = run_work(work, as_json)
    if as_json:
        print(json.dumps(batch))
        return
    _print_batch(batch)


@app.command("pause")
def pause(replay_id: Annotated[str, typer.Argument(help="Replay id.")], as_json: JsonFlag = False) -> None:
    """Stop after the page being replayed."""
    _transition(replay_id, "pause", as_json)


@app.command("resume")
def resume(replay_id: Annotated[str, typer.Argument(help="Replay id.")], as_json: JsonFlag = False) -> None:
    """Go on after the last run handled."""
    _transition(replay_id, "resume", as_json)


@app.command("cancel")
def cancel(replay_id: Annotated[str, typer.Argument(help="Replay id.")], as_json: JsonFlag = False) -> None:
    """Stop for good (the replays already started stay)."""
    _transition(replay_id, "cancel", as_json)

"""`ihub audit list|export|purge`: the audit log from the server's shell (the operator sees every organization)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ihub.common.cli_support import JsonFlag, fail, run_work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ihub.audit.service import AuditFilter
    from ihub.common.crypto import SecretBox

app = typer.Typer(help="Read, export and purge the audit log.", no_args_is_help=True)
console = Console()

ActorOption = Annotated[str | None, typer.Option("--actor", help="Only changes by this user id.")]
ActionOption = Annotated[
    str | None, typer.Option("--action", help="Only this action, e.g. 'PUT /api/v1/project/{project_id}'.")
]
TargetTypeOption = Annotated[
    str | None, typer.Option("--target-type", help="Table of the first change, e.g. projects.")
]
TargetIdOption = Annotated[str | None, typer.Option("--target-id", help="Row id of the first change.")]
OrgOption = Annotated[str | None, typer.Option("--org", help="Only this organization's subtree.")]
ChannelOption = Annotated[str | None, typer.Option("--channel", help="api | console | cli")]
SinceOption = Annotated[str | None, typer.Option("--since", help="At or after (ISO 8601; UTC without a zone).")]
UntilOption = Annotated[str | None, typer.Option("--until", help="Before (ISO 8601; UTC without a zone).")]


def _time(value: str | None, name: str, as_json: bool) -> datetime | None:
    """An ISO 8601 time from the shell; one without a zone is UTC (the log's own clock)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{name} must be an ISO 8601 time such as 2026-01-01T00:00:00Z, got {value!r}", as_json)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _filters(
    as_json: bool,
    actor: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    org: str | None,
    channel: str | None,
    since: str | None,
    until: str | None,
) -> AuditFilter:
    from ihub.audit.schemas import audit_filter
    from ihub.common.errors import ApiError

    try:
        return audit_filter(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            org=org,
            channel=channel,
            since=_time(since, "--since", as_json),
            until=_time(until, "--until", as_json),
        )
    except ApiError as error:
        fail(error.message, as_json)


@app.command("list")
def list_entries(
    actor: ActorOption = None,
    action: ActionOption = None,
    target_type: TargetTypeOption = None,
    target_id: TargetIdOption = None,
    org: OrgOption = None,
    channel: ChannelOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of a previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Audit log entries, newest first."""
    from ihub.audit import service
    from ihub.audit.schemas import parse_optional_id
    from ihub.common.errors import ApiError

    filters = _filters(as_json, actor, action, target_type, target_id, org, channel, since, until)
    try:
        before = parse_optional_id(cursor, "cursor")
    except ApiError as error:
        fail(error.message, as_json)

    async def work(session: AsyncSession, _box: SecretBox) -> dict[str, Any]:
        path = await service.org_path(session, filters.org_id)
        entries, older = await service.page(session, path, filters, limit=limit, before=before)
        return {"entries": [service.entry_json(e) for e in entries], "nextCursor": str(older) if older else None}

    page = run_work(work, as_json)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(title="audit log")
    for column in ("id", "at", "who", "via", "action", "target", "changes"):
        table.add_column(column)
    for entry in page["entries"]:
        target = entry["target"]
        table.add_row(
            entry["id"],
            entry["at"][:19],
            entry["actor"]["name"],
            entry["channel"],
            entry["action"],
            f"{target['type']} {target['id']}" if target else "",
            str(len(entry["changes"])),
        )
    console.print(table)
    if page["nextCursor"]:
        console.print(f"more: --cursor {page['nextCursor']}")


@app.command("export")
def export_entries(
    actor: ActorOption = None,
    action: ActionOption = None,
    target_type: TargetTypeOption = None,
    target_id: TargetIdOption = None,
    org: OrgOption = None,
    channel: ChannelOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Every matching entry as JSON lines on stdout, newest first."""
    from ihub.audit import service

    filters = _filters(True, actor, action, target_type, target_id, org, channel, since, until)

    async def work(session: AsyncSession, _box: SecretBox) -> int:
        path = await service.org_path(session, filters.org_id)
        written = 0
        async for entry in service.export_entries(session, path, filters):
            print(json.dumps(service.entry_json(entry), separators=(",", ":")))
            written += 1
        return written

    run_work(work, True)


@app.command("purge")
def purge(
    older_than_days: Annotated[
        int | None,
        typer.Option("--older-than-days", min=1, help="Default: IHUB_AUDIT_RETENTION_DAYS."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete entries past the retention now (the hub also does it hourly)."""
    from ihub.audit import service
    from ihub.config import get_settings

    days = older_than_days or get_settings().audit_retention_days

    async def work(session: AsyncSession, _box: SecretBox) -> int:
        return await service.purge_entries(session, older_than_days=days)

    purged = run_work(work, as_json)
    if as_json:
        print(json.dumps({"purged": purged, "olderThanDays": days}))
    else:
        console.print(f"purged {purged} entries older than {days} days")

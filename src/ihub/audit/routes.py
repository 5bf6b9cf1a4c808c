"""`/api/v1/audit`: the audit log of the caller's organization subtree (Owners only), as pages or JSON lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ihub.audit import service
from ihub.audit.schemas import AuditList, audit_filter, parse_optional_id
from ihub.audit.service import AuditFilter
from ihub.common.context import Session
from ihub.common.fields import IsoTime
from ihub.common.responses import errors
from ihub.provisioning.deps import Caller

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=errors(400, 401, 403, 404))

Actor = Annotated[str | None, Query(description="Only changes by this user id.")]
Action = Annotated[
    str | None,
    Query(description="Only this action, e.g. `PUT /api/v1/project/{project_id}` or `ihub template import`."),
]
TargetType = Annotated[
    str | None, Query(alias="targetType", description="Only entries whose first change is of this table.")
]
TargetId = Annotated[str | None, Query(alias="targetId", description="... and this row id.")]
Org = Annotated[str | None, Query(description="Only this organization's subtree (one the caller sees).")]
ChannelQuery = Annotated[str | None, Query(description="api | console | cli")]
Since = Annotated[IsoTime | None, Query(description="At or after (ISO 8601 with a zone).")]
Until = Annotated[IsoTime | None, Query(description="Before (ISO 8601 with a zone).")]


def query_filters(
    actor: Actor = None,
    action: Action = None,
    target_type: TargetType = None,
    target_id: TargetId = None,
    org: Org = None,
    channel: ChannelQuery = None,
    since: Since = None,
    until: Until = None,
) -> AuditFilter:
    """The filters both GET /audit and its export take, checked once (400 for a bad one)."""
    return audit_filter(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        org=org,
        channel=channel,
        since=since,
        until=until,
    )


Filters = Annotated[AuditFilter, Depends(query_filters)]


@router.get("/audit", response_model=AuditList, response_model_by_alias=True)
async def list_audit(
    caller: Caller,
    session: Session,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> AuditList:
    """Who changed what, newest first, in pages: every change made through `/api/v1`, the console or the CLI
    in the caller's organization subtree. Owners only (403 for Admins and Members)."""
    entries, older = await service.list_entries(
        session, caller, filters, limit=limit, before=parse_optional_id(cursor, "cursor")
    )
    return AuditList(entries=[service.entry_json(e) for e in entries], next_cursor=str(older) if older else None)


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One entry per line, newest first."}},
)
async def export_audit(
    request: Request,
    caller: Caller,
    session: Session,
    filters: Filters,
) -> StreamingResponse:
    """The same entries as GET /audit, as JSON lines (`application/x-ndjson`), streamed; at most 100 000 per
    export (narrow it with since/until for more)."""
    # Checked before the first byte: a refusal is still a 403/404, not a cut-off stream.
    path = await service.readable_path(session, caller, filters.org_id)
    context = request.app.state.context

    async def lines() -> AsyncIterator[bytes]:
        # Its own read session: the request's ends when the handler returns, before the body is streamed.
        async with context.readers() as reader:
            async for entry in service.export_entries(reader, path, filters):
                yield (json.dumps(service.entry_json(entry), separators=(",", ":")) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="ihub-audit.jsonl"', "Cache-Control": "no-store"},
    )

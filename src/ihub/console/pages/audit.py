"""Audit log (Owners): who changed what in the selected organization's subtree, filtered by GET parameters (a
filtered list is a URL to keep), in keyset pages, with a JSON-lines export of the same filters. The entries are
`ihub.audit.service.entry_json`, exactly what `GET /api/v1/audit` answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from ihub.audit import service
from ihub.audit.recorder import Channel
from ihub.audit.schemas import audit_filter, parse_optional_id
from ihub.audit.service import AuditFilter
from ihub.common.context import Session
from ihub.common.ids import path_id
from ihub.console.auth import SignedIn
from ihub.console.pages.runs import parse_time
from ihub.console.shell import load_shell
from ihub.console.web import render, with_security_headers

router = APIRouter()

PAGE_SIZE = 50


@dataclass(frozen=True)
class Filters:
    """The page's query parameters as typed (kept in the form) and as the service reads them."""

    actor: str = ""
    action: str = ""
    channel: str = ""
    target_type: str = ""
    target_id: str = ""
    since: str = ""
    until: str = ""

    def query(self, **extra: str | None) -> str:
        values = {name: value for name, value in asdict(self).items() if value}
        values.update({name: value for name, value in extra.items() if value})
        return "?" + urlencode(values) if values else ""

    @property
    def active(self) -> bool:
        return any(asdict(self).values())


def audit_query(
    actor: str = "",
    action: str = "",
    channel: str = "",
    target_type: str = "",
    target_id: str = "",
    since: str = "",
    until: str = "",
) -> Filters:
    return Filters(actor.strip(), action.strip(), channel, target_type.strip(), target_id.strip(), since, until)


Listing = Annotated[Filters, Depends(audit_query)]


def service_filter(filters: Filters, org_id: int) -> AuditFilter:
    return audit_filter(
        actor=filters.actor or None,
        action=filters.action or None,
        target_type=filters.target_type or None,
        target_id=filters.target_id or None,
        org=str(org_id),
        channel=filters.channel or None,
        since=parse_time(filters.since, "From"),
        until=parse_time(filters.until, "Until"),
    )


@router.get("/org/{org_id}/audit")
async def audit_log(
    request: Request, org_id: str, viewer: SignedIn, session: Session, filters: Listing, before: str | None = None
) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "admin", "audit")
    entries, older = await service.list_entries(
        session,
        viewer.principal,
        service_filter(filters, shell.org.id),
        limit=PAGE_SIZE,
        before=parse_optional_id(before, "before"),
    )
    base = f"/console/org/{shell.org.id}/audit"
    return render(
        request,
        "audit.html",
        **shell.context(),
        tab="audit",
        entries=[service.entry_json(entry) for entry in entries],
        filters=filters,
        channels=[channel.value for channel in Channel],
        base=base,
        export_url=f"{base}/export{filters.query()}",
        older_url=base + filters.query(before=str(older)) if older else None,
    )


@router.get("/org/{org_id}/audit/export")
async def export_audit_log(
    request: Request, org_id: str, viewer: SignedIn, session: Session, filters: Listing
) -> StreamingResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "admin", "audit")
    chosen = service_filter(filters, shell.org.id)
    # Refused (403/404) before the first byte, like the API's export.
    path = await service.readable_path(session, viewer.principal, chosen.org_id)
    readers = request.app.state.context.readers

    async def lines() -> AsyncIterator[bytes]:
        async with readers() as reader:
            async for entry in service.export_entries(reader, path, chosen):
                yield (json.dumps(service.entry_json(entry), separators=(",", ":")) + "\n").encode()

    # The pages' headers too: the lines hold tenants' text, which no browser may sniff or frame as a page.
    return with_security_headers(
        StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="ihub-audit.jsonl"'},
        )
    )

"""Failures: an organization's failure inbox (ihub.runs.inbox), the groups of failed runs of its subtree, the
latest failure first, each with its counts, first and last seen, the organizations affected, a sample error,
a link to its runs (the runs page filtered by the group) and Replay… (the bulk replay page of the group).

Filters are GET query parameters, as on the runs page; pages are keyset pages on (last seen, key)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ihub.common.context import Session
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.console.auth import SignedIn
from ihub.console.pages.runs import parse_time
from ihub.console.shell import load_shell
from ihub.console.web import render
from ihub.flows.definition import KEY_PATTERN
from ihub.runs import inbox

router = APIRouter()

PAGE_SIZE = 25


def replay_url(org_id: int, key: str) -> str:
    """The bulk replay page of a group (ihub.replays' console page)."""
    return f"/console/orgs/{org_id}/replays/new?" + urlencode({"failureKey": key})


@router.get("/org/{org_id}/failures")
async def org_failures(
    request: Request,
    org_id: str,
    viewer: SignedIn,
    session: Session,
    flow: Annotated[str, Query(max_length=100)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "failures")
    flow = flow.strip()
    if flow and KEY_PATTERN.fullmatch(flow) is None:
        raise ApiError(400, "flow must be a flow key (letters, digits, _ and -)", "invalid_request")
    after = inbox.Cursor.decode(cursor) if cursor else None
    if cursor and after is None:
        raise ApiError(400, "cursor must come from the page's Older groups link", "invalid_request")
    filters = inbox.InboxFilter(flow_key=flow or None, since=parse_time(since, "Since"))
    page = await inbox.groups(session, shell.org.path, filters, limit=PAGE_SIZE, cursor=after)
    base = f"/console/org/{shell.org.id}/failures"
    kept = {name: value for name, value in {"flow": flow, "since": since}.items() if value}
    older = None
    if page.next_cursor is not None:
        older = base + "?" + urlencode({**kept, "cursor": page.next_cursor.encode()})
    return render(
        request,
        "failures.html",
        **shell.context(),
        groups=page.groups,
        flow=flow,
        since=since,
        filtered=bool(kept),
        base=base,
        older_url=older,
        runs_url=lambda key: f"/console/org/{shell.org.id}/runs?" + urlencode({"failure": key}),
        replay_url=lambda key: replay_url(shell.org.id, key),
    )

"""Hostile input on the operations pages (failures, bulk replay, audit log, events): times past the calendar's
ends, digits that are not ASCII, and who sees a change made to an organization's endpoints and replays from
above it (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from console_flows import console_user
from console_kit import Browser
from sqlalchemy import select

from db_snapshot import NothingWritten
from ihub.audit.models import AuditEntry
from ihub.events.models import EventEndpoint
from replay_kit import failed_runs, key, project

pytestmark = pytest.mark.anyio

# Each parses as ISO 8601 but has no UTC equivalent inside the calendar (year 10000 / year 0).
PAST_THE_END = "9999-12-31T23:59:59-14:00"
BEFORE_THE_START = "0001-01-01T00:00:00%2B14:00"


@pytest.mark.parametrize(
    "path",
    [
        f"/console/org/1/failures?since={PAST_THE_END}",
        f"/console/org/1/failures?since={BEFORE_THE_START}",
        f"/console/org/1/replays/new?since={PAST_THE_END}",
        f"/console/org/1/replays/new?until={BEFORE_THE_START}",
        f"/console/org/1/audit?since={PAST_THE_END}",
        f"/console/org/1/audit?until={BEFORE_THE_START}",
        f"/console/org/1/audit/export?since={PAST_THE_END}",
        f"/console/org/1/runs?since={PAST_THE_END}",
    ],
)
async def test_a_time_outside_the_calendar_in_utc_is_a_400(owner_browser: Browser, path: str) -> None:
    page = await owner_browser.page(path, expect=400)
    assert "outside the calendar" in page.text


async def test_a_rate_in_other_scripts_digits_is_refused_and_starts_nothing(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    prj = await project(client, auth)
    await failed_runs(app, prj, 2, failure_key=key("e"))
    new = f"/console/org/1/replays/new?failureKey={key('e')}"
    form = {"failureKey": key("e"), "status": "failed", "version": "original"}
    for rate in ("²", "١٠"):  # str.isdigit() says yes to both; int() refuses the first
        async with NothingWritten(app):
            response = await owner_browser.submit(new, "/console/org/1/replays", {**form, "rate": rate})
            assert response.status_code == 303 and response.headers["location"].endswith(new)
            assert "whole number" in response.cookies["ihub_flash"]
    response = await owner_browser.submit(new, "/console/org/1/replays", {**form, "rate": "10"})
    assert response.status_code == 303 and response.headers["location"].startswith("/console/replay/")


async def audit_orgs(app: Any, action: str) -> list[int | None]:
    async with app.state.context.sessions() as session:
        query = select(AuditEntry.org_id).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list((await session.scalars(query)).all())


async def test_a_child_organizations_owner_audits_changes_made_to_it_from_above(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser, open_browser: Any
) -> None:
    response = await client.post("/api/v1/org", json={"name": "branch", "parentId": "1"}, headers=auth)
    branch = response.json()["organizations"][0]["id"]
    prj = await project(client, auth, branch)
    await failed_runs(app, prj, 1, failure_key=key("f"))

    # The root's Owner registers, rotates and disables the branch's endpoint and replays its failures.
    events = f"/console/org/{branch}/events"
    registered = await owner_browser.submit(
        events, events, {"url": "http://127.0.0.1:9/hook", "eventTypes": "run.failed"}
    )
    assert registered.status_code == 200, registered.text[:2000]
    async with app.state.context.sessions() as session:
        endpoint = await session.scalar(select(EventEndpoint.id).where(EventEndpoint.org_id == int(branch)))
    selected = f"{events}?endpoint={endpoint}"
    assert (await owner_browser.submit(selected, f"/console/event-endpoint/{endpoint}/rotate", {})).status_code == 200
    disabled = await owner_browser.submit(selected, f"/console/event-endpoint/{endpoint}/enabled", {"enabled": "false"})
    assert disabled.status_code == 303
    new = f"/console/org/{branch}/replays/new?failureKey={key('f')}"
    form = {"failureKey": key("f"), "status": "failed", "version": "original", "rate": "10"}
    assert (await owner_browser.submit(new, f"/console/org/{branch}/replays", form)).status_code == 303

    # Each entry belongs to the branch (the organization of the rows it changed), not to the actor's root...
    actions = [
        "POST /console/org/{org_id}/events",
        "POST /console/event-endpoint/{endpoint_id}/rotate",
        "POST /console/event-endpoint/{endpoint_id}/enabled",
        "POST /console/org/{org_id}/replays",
    ]
    for action in actions:
        assert await audit_orgs(app, action) == [int(branch)], action

    # ... so the branch's own Owner reads them on its Audit log page and in its export.
    async with open_browser() as http:
        branch_owner = await console_user(app, client, auth, http, branch, "Owner")
        page = (await branch_owner.page(f"/console/org/{branch}/audit")).text
        exported = (await branch_owner.page(f"/console/org/{branch}/audit/export")).text
        listed = {json.loads(line)["action"] for line in exported.splitlines()}
        for action in actions:
            assert action in page and action in listed


async def test_the_audit_export_carries_the_pages_security_headers(owner_browser: Browser) -> None:
    exported = await owner_browser.page("/console/org/1/audit/export")
    assert exported.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in exported.headers["content-security-policy"]
    assert exported.headers["cache-control"] == "no-store"

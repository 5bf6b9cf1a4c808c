"""Admin → System: root-org Owners only (everyone else 403), read-only numbers that match the database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from console_flows import ECHO, add_org, console_user, flow_id, make_project
from console_kit import Browser
from sqlalchemy import func, select

from ihub.runs.models import Run

pytestmark = pytest.mark.anyio


def stat(page: str, name: str) -> int:
    found = re.search(rf'id="stat-{name}">(\d+)<', page)
    assert found, name
    return int(found.group(1))


async def test_numbers_match_the_database(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [ECHO])
    flow = flow_id(project, "echo")
    now = datetime.now(UTC)
    far = now + timedelta(days=1)
    rows = [
        # Queued but due tomorrow (a retry backoff): the in-process executor leaves them alone.
        *[{"status": "queued", "next_attempt_at": far} for _ in range(3)],
        # Running with live leases of one worker, and two stuck past their lease (another worker died).
        *[{"status": "running", "lease_owner": "local-alive", "lease_expires_at": far} for _ in range(2)],
        *[
            {"status": "running", "lease_owner": "local-dead", "lease_expires_at": now - timedelta(minutes=5)}
            for _ in range(2)
        ],
        {"status": "succeeded"},
    ]
    async with app.state.context.sessions() as session:
        runs = [
            Run(project_id=int(project["id"]), flow_id=flow, trigger_type="manual", trigger={}, **row) for row in rows
        ]
        session.add_all(runs)
        await session.commit()
        stuck_ids = [run.id for run in runs if run.lease_owner == "local-dead"]
    # Stop the in-process executor from reclaiming the expired leases while the page is read.
    executor = app.state.context.executor
    app.state.context.executor = None
    try:
        page = (await owner_browser.page("/console/system")).text
    finally:
        app.state.context.executor = executor
    async with app.state.context.sessions() as session:
        queued = await session.scalar(select(func.count()).select_from(Run).where(Run.status == "queued"))
        running = await session.scalar(select(func.count()).select_from(Run).where(Run.status == "running"))
    assert stat(page, "queued") == queued == 3
    assert stat(page, "running") == running == 4
    assert stat(page, "stuck") == 2
    assert stat(page, "retention") == app.state.context.settings.run_retention_days
    assert 'id="executor-kind">local<' in page
    assert "local-alive" in page and "local-dead" in page
    for run_id in stuck_ids:
        assert f'href="/console/run/{run_id}"' in page
    assert "<form" not in page.split('<main id="main"', 1)[1]  # read-only: no form in the content


async def test_only_root_owners_see_it(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser, open_browser: Any
) -> None:
    assert 'href="/console/system"' in (await owner_browser.page("/console/org/1/users")).text
    sub = await add_org(client, auth)
    for org, role in (("1", "Admin"), ("1", "Member"), (sub, "Owner")):
        async with open_browser() as http:
            person = await console_user(app, client, auth, http, org, role)
            denied = await person.page("/console/system", expect=403)
            assert "root organization" in denied.text
            assert 'href="/console/system"' not in (await person.page(f"/console/org/{org}/users")).text

"""Runs pages: lists of a project and of an org subtree, filters kept in the URL, keyset pages that return every
run exactly once, the run page's timeline as the API shows it, Replay and Cancel (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from console_flows import (
    ECHO,
    WAITING,
    add_org,
    console_user,
    flow_id,
    insert_runs,
    link,
    listed_runs,
    make_project,
)
from console_kit import Browser, csrf_in
from sqlalchemy import func, select

from ihub.runs.models import Run

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


async def walk(browser: Browser, first: str, rel: str) -> tuple[list[int], str]:
    """Follow `rel` links from `first`; every run id listed, in order, and the last page's URL."""
    seen: list[int] = []
    url: str | None = first
    last = first
    while url is not None:
        page = (await browser.page(url)).text
        seen += listed_runs(page)
        last, url = url, link(page, rel)
    return seen, last


async def seeded(app: Any, client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    """Two projects of the root org and one of a sub-org, 130 finished runs over 130 minutes."""
    root_a = await make_project(client, auth, [ECHO, WAITING])
    root_b = await make_project(client, auth, [ECHO])
    sub = await add_org(client, auth)
    child = await make_project(client, auth, [ECHO], org_id=sub)
    rows = []
    for index in range(130):
        project = (root_a, root_b, child)[index % 3]
        key = "waiting" if project is root_a and index % 2 else "echo"
        rows.append(
            {
                "project_id": int(project["id"]),
                "flow_id": flow_id(project, key),
                "status": ("succeeded", "failed", "cancelled", "succeeded", "failed")[index % 5],
                "created_at": BASE + timedelta(minutes=index),
            }
        )
    ids = await insert_runs(app, rows)
    return {"a": root_a, "b": root_b, "child": child, "sub": sub, "rows": rows, "ids": ids}


async def test_pages_return_every_run_once_and_filters_narrow(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    data = await seeded(app, client, auth)
    everything = sorted(data["ids"], reverse=True)

    # The root org's list spans its subtree: all 130, 50 per page, newest first, each once; back again.
    older, last = await walk(owner_browser, "/console/org/1/runs", "next")
    assert older == everything
    newer, _ = await walk(owner_browser, last, "prev")
    assert sorted(newer, reverse=True) == everything and len(set(newer)) == len(newer)

    # A sub-org's list holds only its own projects' runs.
    child_ids = [
        i for i, row in zip(data["ids"], data["rows"], strict=True) if row["project_id"] == int(data["child"]["id"])
    ]
    seen, _ = await walk(owner_browser, f"/console/org/{data['sub']}/runs", "next")
    assert seen == sorted(child_ids, reverse=True)

    def expected(**match: Any) -> list[int]:
        return sorted(
            (i for i, row in zip(data["ids"], data["rows"], strict=True) if all(row[k] == v for k, v in match.items())),
            reverse=True,
        )

    project_a = data["a"]["id"]
    a_id = int(project_a)
    # Status, kept in the URL of every page.
    seen, _ = await walk(owner_browser, f"/console/project/{project_a}/runs?status=failed", "next")
    assert seen == expected(project_id=a_id, status="failed") and seen
    first = (await owner_browser.page("/console/org/1/runs?status=failed")).text
    assert 'option value="failed" selected' in first
    older_link = link(first, "next")
    assert older_link is not None and "status=failed" in older_link
    # Flow (by id).
    waiting = flow_id(data["a"], "waiting")
    seen, _ = await walk(owner_browser, f"/console/project/{project_a}/runs?flow={waiting}", "next")
    assert seen == expected(project_id=a_id, flow_id=waiting) and seen
    # Time range: [10 min, 40 min) after the first run, as UTC datetime-local values.
    since, until = BASE + timedelta(minutes=10), BASE + timedelta(minutes=40)
    query = f"since={since:%Y-%m-%dT%H:%M}&until={until:%Y-%m-%dT%H:%M}"
    seen, _ = await walk(owner_browser, f"/console/org/1/runs?{query}", "next")
    assert (
        seen
        == [i for i, row in zip(data["ids"], data["rows"], strict=True) if since <= row["created_at"] < until][::-1]
    )
    assert len(seen) == 30
    # Everything together, and a filter nothing matches says so.
    seen, _ = await walk(owner_browser, f"/console/org/1/runs?status=cancelled&flow={waiting}&{query}", "next")
    assert all(data["rows"][data["ids"].index(i)]["status"] == "cancelled" for i in seen)
    nothing = (await owner_browser.page(f"/console/org/{data['sub']}/runs?flow={waiting}")).text
    assert "No runs match these filters." in nothing
    # Bad filters are the API's 400s.
    await owner_browser.page("/console/org/1/runs?status=done", expect=400)
    await owner_browser.page("/console/org/1/runs?since=yesterday", expect=400)


async def test_member_of_a_sub_org_sees_only_its_runs(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], open_browser: Any
) -> None:
    data = await seeded(app, client, auth)
    async with open_browser() as http:
        member = await console_user(app, client, auth, http, data["sub"], "Member")
        await member.page("/console/org/1/runs", expect=404)
        await member.page(f"/console/project/{data['a']['id']}/runs", expect=404)
        root_run = data["ids"][0]
        await member.page(f"/console/run/{root_run}", expect=404)
        csrf = csrf_in((await member.page(f"/console/org/{data['sub']}/runs")).text)
        assert (await http.post(f"/console/run/{root_run}/replay", data={"csrf": csrf})).status_code == 404
    async with app.state.context.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 130


async def wait_for(client: httpx.AsyncClient, auth: dict[str, str], run_id: str, *statuses: str) -> dict[str, Any]:
    for _ in range(300):
        run: dict[str, Any] = (await client.get(f"/api/v1/run/{run_id}", headers=auth)).json()["runs"][0]
        if run["status"] in statuses and (run["steps"] or run["status"] != "queued"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} is {run['status']}")


async def test_run_page_replay_and_cancel(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [ECHO, WAITING])
    echo, waiting = flow_id(project, "echo"), flow_id(project, "waiting")
    trigger_page = f"/console/flow/{echo}/trigger"
    started = await owner_browser.submit(trigger_page, f"/console/flow/{echo}/run", {"body": '{"n": 7}'})
    run_id = started.headers["location"].rsplit("/", 1)[1]
    api_run = await wait_for(client, auth, run_id, "succeeded")

    page = (await owner_browser.page(f"/console/run/{run_id}")).text
    assert "badge-succeeded" in page and "data-refresh" not in page and "Cancel run" not in page
    # Step records are rendered from the same redacted summaries the API answers with, nothing more.
    shown = [
        json.loads(html.unescape(block))
        for block in re.findall(r'<pre class="json"(?: id="[^"]+")?>(.*?)</pre>', page, re.S)
    ]
    for step in api_run["steps"]:
        assert step["path"] in page
        for part in ("request", "response"):
            assert step[part] is None or step[part] in shown
    assert api_run["trigger"] in shown

    replayed = await owner_browser.submit(
        f"/console/run/{run_id}", f"/console/run/{run_id}/replay", {"version": "current"}
    )
    assert replayed.status_code == 303
    new_id = replayed.headers["location"].rsplit("/", 1)[1]
    assert new_id != run_id
    replay = await wait_for(client, auth, new_id, "succeeded")
    assert replay["replayOf"] == run_id and replay["trigger"]["body"] == {"n": 7}
    assert f'href="/console/run/{run_id}">#{run_id}' in (await owner_browser.page(f"/console/run/{new_id}")).text

    # A run waiting out a delay step: the page refreshes itself and offers Cancel; cancelling ends it.
    started = await owner_browser.submit(
        f"/console/flow/{waiting}/trigger", f"/console/flow/{waiting}/run", {"body": "{}"}
    )
    waiting_id = started.headers["location"].rsplit("/", 1)[1]
    await wait_for(client, auth, waiting_id, "queued")
    live = (await owner_browser.page(f"/console/run/{waiting_id}")).text
    assert 'data-refresh="3"' in live and "Cancel run" in live and "Replay" not in live
    assert "badge-waiting" in live
    cancelled = await owner_browser.submit(f"/console/run/{waiting_id}", f"/console/run/{waiting_id}/cancel", {})
    assert cancelled.status_code == 303
    done = (await owner_browser.page(f"/console/run/{waiting_id}")).text
    assert "is cancelled." in done and "badge-cancelled" in done and "data-refresh" not in done
    again = await owner_browser.http.post(
        f"/console/run/{waiting_id}/cancel",
        data={"csrf": csrf_in(done)},
        headers={"referer": f"http://testserver/console/run/{waiting_id}"},
    )
    assert again.status_code == 303  # a 409 goes back to the page with the message
    assert "already cancelled" in (await owner_browser.page(f"/console/run/{waiting_id}")).text

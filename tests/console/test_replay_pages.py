"""Bulk replay pages: the inbox's link to a dry run of a failure group, Start (Owner/Admin), the progress page the
hub's own replay worker moves forward, Cancel, and another tenant's organization as a 404 (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from console_flows import console_user
from console_kit import Browser

from db_snapshot import NothingWritten
from replay_kit import batch, failed_runs, key, project, replays_of

pytestmark = pytest.mark.anyio


async def progress(browser: Browser, replay_id: str, until: str, timeout: float = 20.0) -> str:
    """The progress page once it shows the status `until` (the app's replay worker works meanwhile)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        page = (await browser.page(f"/console/replay/{replay_id}")).text
        if f"badge-{until}" in page:
            return page
        assert asyncio.get_running_loop().time() < deadline, page[:3000]
        await asyncio.sleep(0.1)


async def finished(app: Any, originals: list[int]) -> None:
    from sqlalchemy import select

    from ihub.runs.models import Run

    for _ in range(200):
        async with app.state.context.sessions() as session:
            statuses = set((await session.scalars(select(Run.status).where(Run.replay_of.in_(originals)))).all())
        if statuses == {"failed"}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"replays still {statuses}")


async def test_dry_run_then_start_then_progress_and_cancel(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 3, failure_key=key("a"))
    await failed_runs(app, prj, 2, failure_key=key("b"))

    # The runs list filtered to failed runs offers the same selection as a bulk replay.
    runs_page = (await owner_browser.page(f"/console/org/1/runs?status=failed&flow={prj['flows'][0]['id']}")).text
    assert f'href="/console/org/1/replays/new?flow={prj["flows"][0]["id"]}&amp;status=failed"' in runs_page
    assert 'id="bulk-replay"' not in (await owner_browser.page("/console/org/1/runs")).text

    # The failure inbox links to the plural spelling: the same page.
    alias = await owner_browser.page(f"/console/orgs/1/replays/new?failureKey={key('a')}", expect=307)
    new = alias.headers["location"]
    assert new == f"/console/org/1/replays/new?failureKey={key('a')}"
    page = (await owner_browser.page(new)).text
    assert re.search(r'id="dry-selected">3 runs<', page) and 'id="dry-to-replay">3<' in page
    assert all(f"#{run_id}<" in page for run_id in originals)
    assert "HTTP 401 from the target" in page and 'id="start-form"' in page

    form = {"failureKey": key("a"), "flow": "", "since": "", "until": "", "status": "failed"}
    response = await owner_browser.submit(new, "/console/org/1/replays", {**form, "version": "current", "rate": "50"})
    assert response.status_code == 303, response.text[:2000]
    replay_id = response.headers["location"].rsplit("/", 1)[1]
    page = await progress(owner_browser, replay_id, "done")
    assert re.search(r'id="replayed">3<', page)
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)
    assert f"/console/replay/{replay_id}" in (await owner_browser.page("/console/org/1/replays")).text

    # The replays ran (the app's executor) and failed again (into their own group: this test's key is made up). A
    # second look at the group never offers the originals again: a newer attempt of each exists (superseded).
    await finished(app, originals)
    page = (await owner_browser.page(new)).text
    assert 'id="dry-selected">3 runs<' in page and 'id="dry-to-replay">0<' in page
    assert "0 already replayed" in page and "3 superseded" in page and 'id="start-form"' not in page
    # Cancelling a finished replay is refused: back to its page with the reason, still done.
    response = await owner_browser.submit(f"/console/replay/{replay_id}", f"/console/replay/{replay_id}/cancel", {})
    assert response.status_code == 303
    page = (await owner_browser.page(response.headers["location"])).text
    assert f"replay {replay_id} is done" in page and "badge-done" in page

    # Cancel stops a slow replay (1 per second) after the page it is on.
    originals = await failed_runs(app, prj, 5, failure_key=key("c"))
    new = f"/console/org/1/replays/new?failureKey={key('c')}"
    form = {"failureKey": key("c"), "status": "failed", "version": "original", "rate": "1"}
    response = await owner_browser.submit(new, "/console/org/1/replays", form)
    replay_id = response.headers["location"].rsplit("/", 1)[1]
    response = await owner_browser.submit(f"/console/replay/{replay_id}", f"/console/replay/{replay_id}/cancel", {})
    assert response.status_code == 303
    await progress(owner_browser, replay_id, "cancelled")
    stopped = await batch(app, replay_id)
    # The app's worker notices at its next page and lets the batch go, having replayed nothing more.
    for _ in range(200):
        if int(replay_id) not in app.state.replay_worker.tasks:
            break
        await asyncio.sleep(0.05)
    assert int(replay_id) not in app.state.replay_worker.tasks
    assert (await batch(app, replay_id)).replayed == stopped.replayed < 5
    assert sum((await replays_of(app, originals)).values()) == stopped.replayed


async def test_members_look_but_do_not_start_and_other_tenants_see_nothing(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], open_browser: Any
) -> None:
    orgs = []
    for name in ("acme", "globex"):
        response = await client.post("/api/v1/org", json={"name": name, "parentId": "1"}, headers=auth)
        orgs.append(response.json()["organizations"][0]["id"])
    acme, globex = orgs
    await failed_runs(app, await project(client, auth, acme), 2, failure_key=key("d"))
    new = f"/console/org/{acme}/replays/new?failureKey={key('d')}"
    form = {"failureKey": key("d"), "status": "failed", "version": "original", "rate": "10"}
    async with open_browser() as member_http, open_browser() as outsider_http:
        member = await console_user(app, client, auth, member_http, acme, "Member")
        page = (await member.page(new)).text
        assert 'id="dry-selected">2 runs<' in page and "Only an Owner or Admin" in page
        async with NothingWritten(app):
            assert (await member.submit(new, f"/console/org/{acme}/replays", form)).status_code == 403

        outsider = await console_user(app, client, auth, outsider_http, globex, "Admin")
        await outsider.page(new, expect=404)
        await outsider.page(f"/console/org/{acme}/replays", expect=404)
        async with NothingWritten(app):
            response = await outsider.submit(f"/console/org/{globex}/replays", f"/console/org/{acme}/replays", form)
            assert response.status_code == 404


async def test_a_selection_past_the_limit_is_refused_beside_the_form(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    """The dry run stops counting past IHUB_REPLAY_MAX_RUNS and says so on the page (no Start button)."""
    prj = await project(client, auth)
    await failed_runs(app, prj, 4, failure_key=key("f"))
    context = app.state.context
    context.settings = context.settings.model_copy(update={"replay_max_runs": 3})
    page = (await owner_browser.page(f"/console/org/1/replays/new?failureKey={key('f')}")).text
    assert 'id="dry-refused"' in page and "more than the 3 runs" in page
    assert 'id="start-form"' not in page and 'id="dry-selected"' not in page

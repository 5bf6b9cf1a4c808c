"""The console's Failures page: an organization's failure inbox with each group's counts, first and last seen,
the organizations affected, the latest error, its Runs link (the runs page filtered by the group) and Replay…;
a sibling organization's person sees only their own share (SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
from console_flows import console_user, listed_runs
from console_kit import Browser

from failure_seed import seed

pytestmark = pytest.mark.anyio


def group_row(page: str, key: str) -> str:
    found = re.search(rf'<tr id="failure-{key}">(.*?)</tr>', page, re.S)
    assert found, f"no row for group {key}"
    return found.group(1)


async def test_failures_page_lists_groups_with_their_links(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser, open_browser: Any
) -> None:
    seeded = await seed(app, client, auth)
    page = (await owner_browser.page("/console/org/1/failures")).text
    assert 'href="/console/org/1/failures" aria-current="page">Failures</a>' in page
    row = group_row(page, seeded.shared)
    assert '<td class="count">10</td>' in row
    assert "2026-03-01 09:00:00 UTC" in row and "2026-03-01 09:24:00 UTC" in row  # first and last seen
    assert 'sync</span> · <span class="mono">create</span>' in row and "HTTP 422" in row
    for org in (seeded.a, seeded.a_child, seeded.b):
        assert f'href="/console/org/{org}/failures"' in row
    runs_link = f"/console/org/1/runs?failure={seeded.shared}"
    assert f'href="{runs_link}"' in row
    assert f'href="/console/orgs/1/replays/new?failureKey={seeded.shared}">Replay…</a>' in row
    # b's own group is the latest failure: listed first.
    assert page.index(f'id="failure-{seeded.b_only}"') < page.index(f'id="failure-{seeded.shared}"')

    # The Runs link lists exactly the group's runs, newest first, and keeps the filter in the form.
    runs_page = (await owner_browser.page(runs_link)).text
    expected = sorted((i for ids in seeded.runs[seeded.shared].values() for i in ids), reverse=True)
    assert listed_runs(runs_page) == expected
    assert f'value="{seeded.shared}" readonly' in runs_page
    await owner_browser.page("/console/org/1/runs?failure=nope", expect=400)

    # Filters: a flow key nothing failed in, a time after every failure.
    assert 'id="failure-' not in (await owner_browser.page("/console/org/1/failures?flow=notify")).text
    assert 'id="failure-' not in (await owner_browser.page("/console/org/1/failures?since=2026-03-02T00:00")).text

    for bad in ("since=yesterday", "cursor=nope", "flow=a%20b"):
        await owner_browser.page(f"/console/org/1/failures?{bad}", expect=400)

    # A Member of `a` sees a's share only; b's page and b's group are out of reach.
    async with open_browser() as http:
        member = await console_user(app, client, auth, http, seeded.a, "Member")
        mine = (await member.page(f"/console/org/{seeded.a}/failures")).text
        row = group_row(mine, seeded.shared)
        assert '<td class="count">5</td>' in row and f"/console/org/{seeded.b}/failures" not in row
        assert f'id="failure-{seeded.b_only}"' not in mine
        sample = html.unescape(row)  # the latest error of a's subtree (a_child's), never b's
        assert "of 'a_child' rejected" in sample and "'b'" not in sample
        await member.page(f"/console/org/{seeded.b}/failures", expect=404)
        runs = (await member.page(f"/console/org/{seeded.a}/runs?failure={seeded.shared}")).text
        assert listed_runs(runs) == sorted(
            seeded.runs[seeded.shared][seeded.a] + seeded.runs[seeded.shared][seeded.a_child], reverse=True
        )


async def test_a_failed_runs_page_links_to_its_group(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    seeded = await seed(app, client, auth)
    run_id = seeded.runs[seeded.shared][seeded.a][0]
    page = (await owner_browser.page(f"/console/run/{run_id}")).text
    assert f'href="/console/org/{seeded.a}/runs?failure={seeded.shared}"' in page and "<code>create</code>" in page
    response = await client.get(f"/api/v1/run/{run_id}", headers=auth)
    assert response.json()["runs"][0]["failureKey"] == seeded.shared
    assert response.json()["runs"][0]["failedStep"] == "create"

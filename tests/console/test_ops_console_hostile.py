"""Hostile input on the operations pages (failures, bulk replay, audit log, events): times past the calendar's
ends, digits that are not ASCII, and who sees a change made to an organization's endpoints and replays from
above it (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from console_kit import Browser

from db_snapshot import NothingWritten
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

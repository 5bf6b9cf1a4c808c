"""Hostile input on the operations pages (failures, bulk replay, audit log, events): times past the calendar's
ends, digits that are not ASCII, and who sees a change made to an organization's endpoints and replays from
above it (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from console_kit import Browser

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

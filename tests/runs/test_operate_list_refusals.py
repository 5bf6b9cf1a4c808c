"""Hostile parameters of the runs lists and the failure inbox: each one a 400 in the error envelope, never a
500 and never a silently different list."""

from __future__ import annotations

from typing import Any

import pytest

from replay_kit import failed_runs, key, project

pytestmark = pytest.mark.anyio


def refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    metadata = response.json()["metadata"]
    assert metadata["status"] == 400 and field in metadata["message"], response.text


async def test_an_inbox_cursor_outside_the_calendar_in_utc_is_a_400(client, auth, app) -> None:  # noqa: ANN001
    # Parses as an aware time, but converting it to UTC leaves years 1 to 9999.
    for moment in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        response = await client.get("/api/v1/org/1/failures", params={"cursor": f"{moment}~{key('a')}"}, headers=auth)
        refused(response, "cursor")


async def test_times_are_iso_8601_never_unix_seconds(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    await failed_runs(app, prj, 2, failure_key=key("a"))
    lists = ["/api/v1/org/1/runs", f"/api/v1/project/{prj['id']}/runs"]
    # `20260101` (a date typed without dashes) used to be read as Unix seconds: 1970-08-23, every run after it.
    for value in ("20260101", "1700000000", "1e10", "-5", "nan"):
        for url in lists:
            for name in ("since", "until"):
                refused(await client.get(url, params={name: value}, headers=auth), name)
        refused(await client.get("/api/v1/org/1/failures", params={"since": value}, headers=auth), "since")
    # ISO 8601 still works, reversed or at the calendar's ends (an empty list, not an error).
    for params in (
        {"since": "2000-01-01T00:00:00Z"},
        {"since": "2026-01-02T00:00:00+01:00", "until": "2026-01-01T00:00:00Z"},
        {"since": "9999-12-31T23:59:59Z"},
        {"until": "0001-01-01T00:00:00Z"},
    ):
        response = await client.get("/api/v1/org/1/runs", params=params, headers=auth)
        assert response.status_code == 200, (params, response.text)
        assert len(response.json()["runs"]) == (2 if params == {"since": "2000-01-01T00:00:00Z"} else 0)

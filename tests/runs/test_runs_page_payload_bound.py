"""A runs page stops once its runs' payloads pass PAGE_PAYLOAD_CHARS: 200 runs of a 1 MB payload made a 184 MB
answer built on the event loop (other requests waited seconds; four at once took 3 GB). The effect checked: a
page holds fewer runs than `limit` when their payloads are large, its cursor leads on to the rest (every run
listed once, in order), and a run larger than the budget alone is still listed, alone on its page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ihub.db.base import utcnow
from ihub.runs import service
from ihub.runs.models import Run
from replay_kit import project

pytestmark = pytest.mark.anyio

BUDGET = 10_000


async def runs_with_payloads(app: Any, prj: dict[str, Any], sizes: list[int]) -> list[int]:
    flow_id = int(prj["flows"][0]["id"])
    runs = [
        Run(
            project_id=int(prj["id"]),
            flow_id=flow_id,
            flow_version=1,
            status="succeeded",
            trigger_type="manual",
            trigger={"body": {"text": "x" * size}, "contentType": "application/json", "headers": {}},
            finished_at=utcnow(),
        )
        for size in sizes
    ]
    async with app.state.context.sessions() as session:
        session.add_all(runs)
        await session.commit()
        return [run.id for run in runs]


async def walk(client: httpx.AsyncClient, auth: dict[str, str], url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=params, headers=auth)
        assert response.status_code == 200, response.text
        pages.append([run["id"] for run in response.json()["runs"]])
        cursor = response.json().get("nextCursor")
        if not cursor:
            return pages


async def test_a_page_ends_when_its_payloads_pass_the_budget(
    client: httpx.AsyncClient, auth: dict[str, str], app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "PAGE_PAYLOAD_CHARS", BUDGET)
    prj = await project(client, auth)
    # Oldest first: 6 runs of 3 000 characters, one of 25 000 (over the budget alone), 3 small ones.
    ids = await runs_with_payloads(app, prj, [3_000] * 6 + [25_000] + [10] * 3)
    newest_first = [str(run_id) for run_id in reversed(ids)]

    for url in (f"/api/v1/project/{prj['id']}/runs", "/api/v1/org/1/runs"):
        pages = await walk(client, auth, url)
        assert [run_id for page in pages for run_id in page] == newest_first  # each once, in order
        big = str(ids[6])
        assert [big] in pages  # over the budget by itself: listed, alone
        # The 3 000-character runs: 3 fit in 10 000 characters with their JSON around them, never 6.
        page_sizes = [len(page) for page in pages if page and int(page[0]) in ids[:6]]
        assert page_sizes and max(page_sizes) <= 3

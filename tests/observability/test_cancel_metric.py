"""A run cancelled while queued is never executed, so no engine counts it: the cancel does, once, as
`ihub_runs_finished_total{status="cancelled"}`; a refused cancel (already finished) counts nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from observability_support import make_project

from ihub.app import create_app
from ihub.config import Settings
from metrics_kit import runs_finished

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "cancel-" + "c" * 24


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    # No executor: runs stay queued until cancelled.
    application = create_app(settings.model_copy(update={"metrics_token": METRICS_TOKEN}), run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_queued_run_cancelled_counts_once(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    flows = await make_project(client, auth, "http://127.0.0.1:9")
    before = await runs_finished(client, METRICS_TOKEN, "pair", "cancelled")
    response = await client.post(f"/api/v1/flow/{flows['pair']}/run", json={}, headers=auth)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]

    response = await client.post(f"/api/v1/run/{run_id}/cancel", headers=auth)
    assert response.status_code == 200 and response.json()["runs"][0]["status"] == "cancelled", response.text
    assert await runs_finished(client, METRICS_TOKEN, "pair", "cancelled") - before == 1
    # Cancelling it again is refused (409) and counts nothing more.
    assert (await client.post(f"/api/v1/run/{run_id}/cancel", headers=auth)).status_code == 409
    assert await runs_finished(client, METRICS_TOKEN, "pair", "cancelled") - before == 1

"""One real `ihub serve` with a worker process: a run the worker executes is counted in the API's scrape (the
multiprocess directory), and /readyz sees the migrated schema and the live worker."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

TOKEN = "live-scrape-" + "t" * 24
FLOW = {"key": "counted", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "ok"}]}


def login(hub: Any) -> httpx.Client:
    http = httpx.Client(base_url=hub.url, timeout=10)
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = http.post("/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    http.headers["Authorization"] = response.json()["tokens"][0]["token"]
    return http


def counted(http: httpx.Client, name: str, labels: dict[str, str]) -> float:
    response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_a_run_executed_by_a_worker_process_is_in_the_scrape(start_live_hub: Any) -> None:
    hub = start_live_hub(extra_env={"IHUB_METRICS_TOKEN": TOKEN, "IHUB_WORKERS": "1"})
    http = login(hub)
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["executor"]["detail"] == "1 of 1 worker processes alive"

    body = {"name": "m", "description": "", "definition": {"connections": [], "flows": [FLOW]}}
    template = http.post("/api/v1/template/org/1", json=body).json()["templates"][0]["id"]
    project = http.post("/api/v1/project/org/1", json={"name": "m", "templateId": template}).json()["projects"][0]
    flow_id = project["flows"][0]["id"]
    response = http.post(f"/api/v1/flow/{flow_id}/run", json={})
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    deadline = time.monotonic() + 30
    while http.get(f"/api/v1/run/{run_id}").json()["runs"][0]["status"] != "succeeded":
        assert time.monotonic() < deadline, "the worker did not execute the run"
        time.sleep(0.1)

    # The API process executes nothing under `serve` with workers: these counts come from the worker's file.
    assert counted(http, "ihub_runs_finished_total", {"flow": "counted", "status": "succeeded"}) == 1
    assert counted(http, "ihub_step_duration_seconds_count", {"type": "respond"}) == 1
    assert counted(http, "ihub_runs_started_total", {"flow": "counted"}) == 1
    # ... and the API process's own counts are there beside them.
    route = {"route": "/api/v1/run/{run_id}", "method": "GET", "status": "2xx"}
    assert counted(http, "ihub_http_request_duration_seconds_count", route) >= 1

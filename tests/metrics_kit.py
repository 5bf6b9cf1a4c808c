"""Reading a counter off a hub's /metrics, as Prometheus would scrape it."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def runs_finished(client: httpx.AsyncClient, token: str, flow_key: str, status: str) -> float:
    """`ihub_runs_finished_total{flow, status}` now (0 before the first such run)."""
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "ihub_runs_finished_total" and sample.labels == {"flow": flow_key, "status": status}:
                return sample.value
    return 0.0

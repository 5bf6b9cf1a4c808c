"""The JWT webhook starts runs on the project's pinned template version, picks up an upgrade at once in the
process that served it, and compiles each version once (no validation per grant or per webhook)."""

from __future__ import annotations

from typing import Any

import pytest
from incoming_support import Incoming, template_definition

from ihub.runs.models import Run

pytestmark = pytest.mark.anyio


async def test_webhook_runs_follow_the_pin_and_compile_once(
    app: Any, incoming: Incoming, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ihub.flows import service

    compiled: list[str] = []
    real = service.compile_flow

    def counting(value: Any, slots: dict[str, str], path: str) -> Any:
        compiled.append(value["key"])
        return real(value, slots, path)

    monkeypatch.setattr(service, "compile_flow", counting)
    trigger = await incoming.trigger()
    project_url = f"/api/v1/project/{incoming.project_id}"
    template_id = (await incoming.client.get(project_url, headers=incoming.auth)).json()["projects"][0]["templateId"]

    async def webhook_version() -> int:
        token = await incoming.access_token(trigger)
        response = await incoming.webhook(token, {"summary": "s"})
        assert response.status_code == 202, response.text
        async with app.state.context.sessions() as session:
            run = await session.get(Run, int(response.json()["runId"]))
            assert run is not None
            return run.flow_version

    assert [await webhook_version() for _ in range(3)] == [1, 1, 1]
    # Trigger page, three grants, three webhooks (and their runs' loads): compiled once.
    assert compiled.count("create-issue") == 1

    response = await incoming.client.put(
        f"/api/v1/template/{template_id}", json={"definition": template_definition()}, headers=incoming.auth
    )
    assert response.status_code == 200, response.text
    assert await webhook_version() == 1  # saved, not upgraded
    response = await incoming.client.post(f"{project_url}/upgrade", headers=incoming.auth)
    assert response.status_code == 200, response.text
    assert [await webhook_version() for _ in range(2)] == [2, 2]
    assert compiled.count("create-issue") == 2

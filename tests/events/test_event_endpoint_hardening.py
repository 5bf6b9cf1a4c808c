"""Event endpoints against hostile input and hostile receivers: URLs the deliverer could not send or that reach
a refused address in another spelling, attempts that cannot even be made, receivers that answer slowly or at
length, the per-organization limit under concurrency, and sub-organization tenancy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ihub.events.models import EventEndpoint

pytestmark = pytest.mark.anyio


async def endpoint_count(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(EventEndpoint)) or 0)


async def test_urls_refused_in_any_spelling_and_unsendable_urls_are_400s(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # The default policy (nothing allowed): registration decides without DNS and without connecting anywhere.
    context = app.state.context
    context.settings = context.settings.model_copy(update={"egress_allow": []})
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://0x7f.1/hook",
        "https://2130706433/hook",
        "https://10.1.2.3/hook",
        "https://[fd00::1]/hook",
        # Ideographic full stops: a name to urlsplit, 127.0.0.1 to the HTTP client that would send.
        "https://127\u30020\u30020\u30021/hook",
        "https://169\uff0e254\uff0e169\uff0e254/",
    ]:
        response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        metadata = response.json()["metadata"]
        assert metadata["code"] == "egress_refused", url
        assert metadata["message"].count("egress policy refuses") == 1, metadata["message"]
    # URLs the HTTP client cannot send at all: refused now, not retried forever later.
    for url in ["https://xn--/hook", "https://\u00ad.example.com/", "https://\ufb00.example.com/", "https://[v1.x]/"]:
        response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["metadata"]["code"] == "invalid_request", url
    assert await endpoint_count(app) == 0
    # An international name is fine (sent as its A-label).
    response = await client.post(
        "/api/v1/event-endpoint/org/1", json={"url": "https://b\u00fccher.example/hook"}, headers=auth
    )
    assert response.status_code == 200, response.text
    # And a change of URL goes through the same checks.
    endpoint_id = response.json()["endpoints"][0]["id"]
    response = await client.put(
        f"/api/v1/event-endpoint/{endpoint_id}", json={"url": "https://127\u30020\u30020\u30021/"}, headers=auth
    )
    assert response.status_code == 400 and response.json()["metadata"]["code"] == "egress_refused"
    response = await client.get(f"/api/v1/event-endpoint/{endpoint_id}", headers=auth)
    assert response.json()["endpoints"][0]["url"] == "https://b\u00fccher.example/hook"

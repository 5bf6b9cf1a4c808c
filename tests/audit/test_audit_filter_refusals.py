"""Hostile filters of GET /api/v1/audit and its export: each a 400 before anything is read or streamed (a NUL
in a text filter was a database error on PostgreSQL: a 500, or an export cut off after its 200)."""

from __future__ import annotations

import pytest

from api_helpers import Api

pytestmark = pytest.mark.anyio


async def test_nul_in_a_text_filter_is_a_400_for_the_list_and_the_export(app, api: Api) -> None:  # noqa: ANN001
    client, auth = api.client, api.auth
    for name in ("action", "targetType", "targetId"):
        for url in ("/api/v1/audit", "/api/v1/audit/export"):
            response = await client.get(url, params={name: "POST\x00"}, headers=auth)
            assert response.status_code == 400, (url, name, response.text)
            metadata = response.json()["metadata"]
            assert (metadata["code"], metadata["errors"][0]["field"]) == ("validation_error", name), response.text


async def test_times_are_iso_8601_never_unix_seconds(app, api: Api) -> None:  # noqa: ANN001
    client, auth = api.client, api.auth
    await api.add_org("audited", "1")  # one entry to find
    for value in ("20260101", "1700000000", "1e10"):
        for url in ("/api/v1/audit", "/api/v1/audit/export"):
            for name in ("since", "until"):
                response = await client.get(url, params={name: value}, headers=auth)
                assert response.status_code == 400, (url, name, value, response.text)
                assert "ISO 8601" in response.json()["metadata"]["message"], response.text
    response = await client.get("/api/v1/audit", params={"since": "2000-01-01T00:00:00Z"}, headers=auth)
    assert response.status_code == 200 and response.json()["entries"], response.text

"""Console → project page: each configured slot shows its health badge and a Test button (POST .../test)."""

from __future__ import annotations

from typing import Any

import pytest
from console_kit import Browser
from pytest_httpserver import HTTPServer
from test_projects_pages import api_project, new_template, wizard

pytestmark = pytest.mark.anyio


async def test_the_test_button_checks_the_connection_and_shows_its_status(
    owner_browser: Browser, api: Any, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/rest/api/3/myself").respond_with_json({"message": "token revoked"}, status=401)
    template = await new_template(api)
    project_id = await wizard(owner_browser, template["id"])
    jira = {
        "type": "jira",
        "siteUrl": httpserver.url_for("/").rstrip("/"),
        "email": "bot@acme.test",
        "apiToken": "tok-12345",
    }
    response = await api.client.put(
        f"/api/v1/project/{project_id}", json={"connections": [{"id": "jira", "details": jira}]}, headers=api.auth
    )
    assert response.status_code == 200, response.text
    page = (await owner_browser.page(f"/console/project/{project_id}")).text
    assert "badge-connected" in page and "Test Jira" in page

    response = await owner_browser.submit(
        f"/console/project/{project_id}", f"/console/project/{project_id}/connections/jira/test", {}
    )

    assert response.status_code == 303, response.text
    page = (await owner_browser.page(f"/console/project/{project_id}")).text
    assert "Jira: error (HTTP 401: token revoked)" in page  # the flash
    assert "badge-error" in page
    [connection] = (await api_project(api, project_id))["connections"]
    assert connection["status"] == "error"

"""The console's Connect button: a POST (CSRF) that sends the browser to the provider, back to the project page."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authserver import AuthServer
from console_kit import signed_in
from flowkit import Kit
from pytest_httpserver import HTTPServer
from test_connect import consent, new_project, set_app

pytestmark = pytest.mark.anyio


async def test_connect_and_reconnect_from_the_project_page(
    kit: Kit, app: Any, owner: Any, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    page_path = f"/console/project/{project['id']}"
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        browser = await signed_in(app, http, int(owner.user_id))
        page = await browser.page(page_path)
        assert "Connect CRM" in page.text and "Reconnect" not in page.text
        # The redirect to the provider follows a form post: the page's form-action allows the provider's origin.
        assert f"form-action 'self' {authserver.base_url}" in page.headers["content-security-policy"]
        action = f"/console/project/{project['id']}/connection/crm/connect"
        answer = await browser.submit(page_path, action, {})
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith(authserver.url("/authorize?"))
        assert parse_qs(urlsplit(location).query)["code_challenge_method"] == ["S256"]
        callback = await http.get("/oauth/callback", params=await consent(authserver, location))
        assert callback.status_code == 200 and f'href="http://testserver{page_path}"' in callback.text
        page = await browser.page(page_path)
        assert "Reconnect CRM" in page.text
        # Without the CSRF token nothing happens.
        refused = await http.post(action, data={})
        assert refused.status_code in (400, 403)

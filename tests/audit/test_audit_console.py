"""The console: a change made there is recorded once as the signed-in person's (channel console); the Audit log
page and its export are for Owners, of their subtree only."""

from __future__ import annotations

import json

import httpx
import pytest
from audit_kit import entries
from console_kit import signed_in

from api_helpers import Api
from ihub.config import Settings

pytestmark = pytest.mark.anyio

PUBLIC_URL = "http://testserver"


def browser_client(app) -> httpx.AsyncClient:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL, follow_redirects=False)


async def test_a_console_change_leaves_one_entry_and_owners_read_it(app, api: Api, owner, settings: Settings) -> None:  # noqa: ANN001
    org = await api.add_org("console-org", "1")
    before = len(await entries(app))
    async with browser_client(app) as http:
        browser = await signed_in(app, http, int(owner.user_id))
        assert len(await entries(app)) == before, "signing in is not a change"
        renamed = await browser.submit(f"/console/org/{org}/orgs", f"/console/org/{org}/rename", {"name": "renamed"})
        assert renamed.status_code == 303, renamed.text[:500]
        written = (await entries(app))[before:]
        assert len(written) == 1
        (entry,) = written
        assert (entry.channel, entry.action) == ("console", "POST /console/org/{org_id}/rename")
        assert entry.actor_user_id == int(owner.user_id) and entry.address == "127.0.0.1"
        assert entry.changes[0]["after"] == {"name": "renamed"}

        page = await browser.page(f"/console/org/{org}/audit")
        assert "POST /console/org/{org_id}/rename" in page.text and "owner@ihub.local" in page.text
        filtered = await browser.page(f"/console/org/{org}/audit?channel=api")
        assert "POST /console/org/{org_id}/rename" not in filtered.text
        exported = await browser.page(f"/console/org/{org}/audit/export?channel=console")
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line)["id"] for line in exported.text.splitlines()] == [str(entry.id)]


async def test_the_page_is_for_owners_of_the_subtree(app, api: Api) -> None:  # noqa: ANN001
    left, right = await api.add_org("left", "1"), await api.add_org("right", "1")
    member = await api.add_user(left, "Member", with_key=False)
    left_owner = await api.add_user(left, "Owner", with_key=False)
    async with browser_client(app) as http:
        browser = await signed_in(app, http, int(member.user_id))
        await browser.page(f"/console/org/{left}/audit", expect=403)
        await browser.page(f"/console/org/{left}/audit/export", expect=403)
    async with browser_client(app) as http:
        browser = await signed_in(app, http, int(left_owner.user_id))
        page = await browser.page(f"/console/org/{left}/audit")
        assert "Audit log" in page.text
        await browser.page(f"/console/org/{right}/audit", expect=404)
        await browser.page(f"/console/org/{right}/audit/export", expect=404)

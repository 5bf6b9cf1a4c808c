"""The trigger page shows each key's expiry (and an expired key as such) and generates keys that expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from console_flows import HOOKED, flow_id, make_project
from console_kit import Browser
from sqlalchemy import select, update

from ihub.incoming.models import TriggerKey

pytestmark = pytest.mark.anyio


async def test_the_page_shows_expiry_and_generates_a_key_that_expires(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    page = f"/console/flow/{flow}/trigger"
    response = await owner_browser.submit(page, f"{page}/generate", {"expires_in_days": "9"})
    assert response.status_code == 200, response.text[:2000]
    async with app.state.context.sessions() as session:
        [stored] = (await session.scalars(select(TriggerKey))).all()
    assert stored.expires_at is not None
    assert timedelta(days=8, hours=23) < stored.expires_at - datetime.now(UTC) <= timedelta(days=9)
    shown = (await owner_browser.page(page)).text
    assert f'<time datetime="{stored.expires_at.isoformat()}">' in shown and "badge-expired" not in shown

    async with app.state.context.sessions() as session:
        past = datetime.now(UTC) - timedelta(days=1)
        await session.execute(update(TriggerKey).where(TriggerKey.id == stored.id).values(expires_at=past))
        await session.commit()
    assert "badge-expired" in (await owner_browser.page(page)).text

    refused = await owner_browser.submit(page, f"{page}/generate", {"expires_in_days": "soon"})
    assert refused.status_code in (303, 400)
    async with app.state.context.sessions() as session:
        assert len((await session.scalars(select(TriggerKey))).all()) == 1

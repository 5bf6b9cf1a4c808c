"""Connection credentials: sealed at rest (not in the SQLite file, not in the PostgreSQL column), never
returned by the API, and handed decrypted and expanded only to the flow engine via connection_runtime."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ihub.common.errors import ApiError
from ihub.db.engine import sync_url
from ihub.projects.service import connection_runtime, project_settings

pytestmark = pytest.mark.anyio


async def configured_project(client, hub, token: str) -> dict:  # noqa: ANN001
    org = await hub.org()
    template = await hub.template("1")
    project = await hub.project(org, template["id"])
    details = {"type": "jira", "siteUrl": "https://acme.atlassian.net", "email": "bot@acme.com", "apiToken": token}
    response = await client.put(
        f"/api/v1/project/{project['id']}",
        json={"connections": [{"id": "jira", "details": details}], "settings": {"jiraProject": "OPS"}},
        headers=hub.auth,
    )
    assert response.status_code == 200, response.text
    assert token not in response.text
    return response.json()["projects"][0]


def raw_database_text(db_url: str) -> bytes:
    """Everything the database holds on disk (SQLite file, WAL and journal) or the connections rows as text."""
    if db_url.startswith("sqlite"):
        path = Path(make_url(db_url).database)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-journal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT secrets_sealed, row_to_json(c)::text FROM connections c")).all()
    engine.dispose()
    assert rows and all(row[0] and row[0].startswith("v1:") for row in rows if '"slot_id":"jira"' in row[1])
    return "\n".join(f"{row[0]}\n{row[1]}" for row in rows).encode()


async def test_token_is_not_stored_in_clear_nor_returned(app, client, hub, db_url):
    token = f"ATATT-{uuid.uuid4().hex}-distinctive"
    project = await configured_project(client, hub, token)
    assert project["connections"][0]["secretsSet"] == ["apiToken"]

    raw = raw_database_text(db_url)
    assert b"acme.atlassian.net" in raw  # the non-secret config is there, so this really is the data...
    assert token.encode() not in raw  # ...and the token is not, in any form we could grep for
    assert token.encode().hex().encode() not in raw

    for url in (f"/api/v1/project/{project['id']}", f"/api/v1/project/org/{project['orgId']}"):
        response = await client.get(url, headers=hub.auth)
        assert response.status_code == 200 and token not in response.text


async def test_connection_runtime_decrypts_and_expands(app, client, hub):
    token = f"tok-{uuid.uuid4().hex}"
    project = await configured_project(client, hub, token)
    context = app.state.context
    async with context.sessions() as session:
        runtime = await connection_runtime(session, context.box, int(project["id"]), "jira")
        settings = await project_settings(session, int(project["id"]))
    assert runtime["type"] == "http" and runtime["sourceType"] == "jira"
    assert runtime["config"]["baseUrl"] == "https://acme.atlassian.net"
    assert (runtime["config"]["authType"], runtime["config"]["username"]) == ("basic", "bot@acme.com")
    assert runtime["secrets"] == {"password": token}
    assert settings == {"jiraProject": "OPS"}


async def test_connection_runtime_refuses_unconfigured_or_unknown(app, client, hub):
    org = await hub.org()
    template = await hub.template("1")
    project = await hub.project(org, template["id"])
    context = app.state.context
    async with context.sessions() as session:
        with pytest.raises(ApiError) as caught:
            await connection_runtime(session, context.box, int(project["id"]), "jira")
        assert (caught.value.status, caught.value.code) == (400, "connection_not_configured")
        assert "missing siteUrl, email, apiToken" in caught.value.message
        with pytest.raises(ApiError) as caught:
            await connection_runtime(session, context.box, int(project["id"]), "nope")
        assert (caught.value.status, caught.value.code) == (400, "unknown_connection")
        with pytest.raises(ApiError):
            await connection_runtime(session, context.box, 999999, "jira")
        assert await project_settings(session, 999999) == {}


async def test_sealed_secrets_are_bound_to_their_connection(app, client, hub, db_url):
    """A sealed value copied onto another connection's row does not decrypt there."""
    first = await configured_project(client, hub, "first-token")
    org = await hub.org()
    second = await hub.project(org, first["templateId"])
    await client.put(
        f"/api/v1/project/{second['id']}",
        json={
            "connections": [{"id": "jira", "siteUrl": "https://x.atlassian.net", "email": "a@b.co", "apiToken": "t"}]
        },
        headers=hub.auth,
    )
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        sealed = conn.execute(
            text("SELECT secrets_sealed FROM connections WHERE project_id = :p"), {"p": int(first["id"])}
        ).scalar_one()
        conn.execute(
            text("UPDATE connections SET secrets_sealed = :s WHERE project_id = :p"),
            {"s": sealed, "p": int(second["id"])},
        )
    engine.dispose()
    context = app.state.context
    async with context.sessions() as session:
        with pytest.raises(ApiError) as caught:
            await connection_runtime(session, context.box, int(second["id"]), "jira")
    assert caught.value.code == "connection_unreadable"

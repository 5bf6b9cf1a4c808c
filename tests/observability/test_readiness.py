"""GET /readyz: 200 with each check when the database answers, its schema is the code's and runs have an
executor; 503 naming the failed check otherwise. /healthz stays "the process is up"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ihub.common.context import AppContext
from ihub.observability.readiness import Check, code_heads, executor_check, migrations_check
from ihub.observability.routes import readiness

pytestmark = pytest.mark.anyio


async def stamp(app: Any, revision: str) -> None:
    """The tests' schema is made from the models, without Alembic's table: write it as `ihub migrate` would."""
    async with app.state.context.engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        )
        await connection.execute(text("DELETE FROM alembic_version"))
        await connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision})


@pytest.fixture
async def stamped(app: Any) -> AsyncIterator[Any]:
    await stamp(app, min(code_heads()))
    yield app
    async with app.state.context.engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


async def test_ready_when_database_schema_and_executor_are(stamped: Any, client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "migrations": True,
        "executor": True,
    }
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    # Load balancers often probe with HEAD: the same status, no body.
    for path in ("/healthz", "/readyz"):
        head = await client.head(path)
        assert (head.status_code, head.content) == (200, b""), path


async def test_migrations_behind_make_it_not_ready(stamped: Any, client: httpx.AsyncClient) -> None:
    assert (await client.get("/readyz")).status_code == 200
    await stamp(stamped, "0001")
    # Cached: the next probe within the TTL still answers from the last check ...
    assert (await client.get("/readyz")).status_code == 200
    readiness_of(stamped).forget()  # ... and once it is taken again, the old revision shows
    assert (await client.head("/readyz")).status_code == 503
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["migrations"]
    assert "0001" in body["checks"]["migrations"]["detail"]
    assert "ihub migrate" in body["checks"]["migrations"]["detail"]


async def test_unreachable_database_makes_it_not_ready(stamped: Any, client: httpx.AsyncClient, tmp_path: Path) -> None:
    context: AppContext = stamped.state.context
    working = context.engine
    # A database "inside" a regular file: every connection attempt fails, and nothing leaves the host.
    (tmp_path / "a-file").write_text("")
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'ihub.db'}")
    context.engine = broken
    try:
        response = await client.get("/readyz")
    finally:
        context.engine = working
        await broken.dispose()
    assert response.status_code == 503
    body = response.json()
    assert "database" in body["failed"] and "migrations" in body["failed"]
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["executor"]["ok"] is True
    assert (await client.get("/readyz")).status_code == 200


async def test_stopped_executor_makes_it_not_ready(stamped: Any, client: httpx.AsyncClient) -> None:
    context: AppContext = stamped.state.context
    executor, context.executor = context.executor, None
    try:
        response = await client.get("/readyz")
    finally:
        context.executor = executor
    assert response.status_code == 503
    assert response.json()["failed"] == ["executor"]


def readiness_of(app: Any) -> Any:
    class Holder:
        pass

    request = Holder()
    request.app = app  # type: ignore[attr-defined]
    return readiness(request)  # type: ignore[arg-type]


def test_migration_policy() -> None:
    heads = frozenset({"0010"})
    assert migrations_check(frozenset({"0010"}), heads) == Check(True, "current")
    assert not migrations_check(frozenset({"0009"}), heads).ok
    assert not migrations_check(frozenset(), heads).ok
    assert not migrations_check(frozenset({"0010", "0011"}), heads).ok


def test_worker_processes_policy() -> None:
    class Supervisor:
        def __init__(self, pids: list[int]) -> None:
            self.pids, self.count = pids, 2

    context: Any = type("C", (), {"executor": Supervisor([]), "supervisor": None})()
    assert executor_check(context, runs_here=True) == Check(False, "none of 2 worker processes is alive")
    context.executor = Supervisor([41])
    assert executor_check(context, runs_here=True).ok
    context.executor = None
    assert not executor_check(context, runs_here=True).ok
    assert executor_check(context, runs_here=False) == Check(True, "not_run_here")

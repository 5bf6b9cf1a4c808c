"""Deleting a project while the engine finishes some of its runs: both lock runs in id order, so on PostgreSQL
one waits for the other instead of deadlocking (which aborted one side: a 503 for the delete, or a lost finish).
SQLite serializes writing transactions, so only PostgreSQL runs the two at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, text, update

from ihub.db.base import utcnow
from ihub.flows.engine import Engine
from ihub.runs.models import Run
from replay_kit import project

pytestmark = pytest.mark.anyio


def postgresql_only(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writing transactions: only PostgreSQL runs a delete and a finish at once")


async def queued_runs_stored_in_reverse(app: Any, prj: dict[str, Any], ids: list[int]) -> None:
    """Queued runs with the given ids, stored highest id first: the cascade of a project delete meets them in
    storage order, the opposite of id order."""
    async with app.state.context.sessions() as session:
        for run_id in sorted(ids, reverse=True):
            session.add(
                Run(
                    id=run_id,
                    project_id=int(prj["id"]),
                    flow_id=int(prj["flows"][0]["id"]),
                    flow_version=1,
                    status="queued",
                    trigger_type="manual",
                    trigger={"body": {}},
                    next_attempt_at=utcnow(),
                )
            )
            await session.flush()
        await session.commit()


async def lock_waiters(app: Any) -> int:
    async with app.state.context.sessions() as probe:
        return int(
            await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            or 0
        )


async def test_a_delete_and_a_batch_touching_the_same_runs_wait_instead_of_deadlocking(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], db_url: str
) -> None:
    postgresql_only(db_url)
    prj = await project(client, auth)
    low, high = 900_001, 900_002
    await queued_runs_stored_in_reverse(app, prj, [low, high])
    context = app.state.context
    async with scanning_in_storage_order(app):
        await delete_while_a_batch_locks(app, client, auth, prj, low, high)
    async with context.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Run).where(Run.id.in_([low, high]))) == 0


@contextlib.asynccontextmanager
async def scanning_in_storage_order(app: Any) -> AsyncIterator[None]:
    """The plan a large project gets (a sequential scan: rows in storage order), where a tiny test table gets
    an index scan in id order: the hub's connections are reopened with index scans off."""
    engine = app.state.context.engine
    settings = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")
    async with engine.connect() as connection:
        database = await connection.scalar(text("SELECT current_database()"))
        for name in settings:
            await connection.execute(text(f'ALTER DATABASE "{database}" SET {name} = off'))
        await connection.commit()
    await engine.dispose()
    try:
        yield
    finally:
        async with engine.connect() as connection:
            for name in settings:
                await connection.execute(text(f'ALTER DATABASE "{database}" RESET {name}'))
            await connection.commit()
        await engine.dispose()


async def delete_while_a_batch_locks(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], prj: dict[str, Any], low: int, high: int
) -> None:
    async with app.state.context.sessions() as batch:
        # A batch of the engine (claims or finishes share one transaction) holds the lower run ...
        await batch.begin()
        await batch.execute(update(Run).where(Run.id == low).values(attempt=Run.attempt))
        deleting = asyncio.create_task(client.delete(f"/api/v1/project/{prj['id']}", headers=auth))
        await _until_waiting_or_done(app, deleting)
        assert not deleting.done(), deleting.result().text
        # ... and goes on to the higher one, which the delete must not have locked while it waits for the lower.
        await batch.execute(update(Run).where(Run.id == high).values(attempt=Run.attempt))
        await batch.commit()
    response = await deleting
    assert response.status_code == 200, response.text


async def _until_waiting_or_done(app: Any, task: asyncio.Task[Any]) -> None:
    for _ in range(400):
        if task.done() or await lock_waiters(app) > 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the delete neither waited for a lock nor finished in 20 s")


async def test_a_batch_of_claims_locks_its_runs_in_id_order(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], db_url: str
) -> None:
    postgresql_only(db_url)
    prj = await project(client, auth)
    ids = [900_011, 900_012, 900_013]
    await queued_runs_stored_in_reverse(app, prj, ids)
    context = app.state.context
    claimed: list[int] = []

    def record(conn, cursor, statement, parameters, context_, executemany) -> None:  # noqa: ANN001, ARG001
        if statement.lstrip().upper().startswith("UPDATE RUNS"):
            claimed.extend({value for value in _values(parameters) if value in ids})

    sync_engine = context.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    engine = Engine(context, "batch")
    try:
        # Arriving highest first, as finishes of concurrent runs may.
        assert await engine._claim_together([ids[2], ids[0], ids[1], ids[0]]) == [True, True, True, False]
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
        await engine.close()
    # A claim may take more than one statement per run: the order of first touches is what locks.
    assert list(dict.fromkeys(claimed)) == ids


def _values(parameters: Any) -> list[Any]:
    if isinstance(parameters, dict):
        return list(parameters.values())
    return list(parameters or ())

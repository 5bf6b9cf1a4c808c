"""A bulk replay's start and dry run count the selection only up to IHUB_REPLAY_MAX_RUNS + 1.

Both are POSTs: on SQLite they hold the hub's one write lock while they count. Counting a tenant's whole history
(a million failed runs: 2.6 s for a dry run, every other tenant's writes waiting, 503 past the lock timeout with
a few dry runs at once) made any role a noisy neighbour. The effect checked here: the counting statements tell
the database to stop at the limit, and a selection past the limit is refused by the dry run as by the start."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event

from db_snapshot import NothingWritten
from ihub.db.files import sqlite_path
from replay_kit import failed_runs, key, project

pytestmark = pytest.mark.anyio


class Statements:
    """The SQL the app runs (write and read connections) while the block is open."""

    def __init__(self, app: Any) -> None:
        context = app.state.context
        self.engines = {context.engine.sync_engine, (context.read_engine or context.engine).sync_engine}
        self.seen: list[tuple[str, Any]] = []

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        self.seen.append((statement, parameters))

    def __enter__(self) -> Statements:
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._record)

    def counts_of_runs(self) -> list[tuple[str, Any]]:
        return [(sql, params) for sql, params in self.seen if "count(" in sql.lower() and "FROM runs" in sql]


def limits_of(sql: str, parameters: Any) -> list[int]:
    """The numbers a statement with a LIMIT may stop at: its literal LIMIT values and its integer parameters
    (the selection's own parameters are texts)."""
    if "LIMIT" not in sql:
        return []
    values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters or ())
    return [int(n) for n in re.findall(r"LIMIT (\d+)", sql)] + [v for v in values if isinstance(v, int)]


async def test_the_dry_run_and_the_start_stop_counting_past_the_limit(client, auth, app, limits) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    await failed_runs(app, prj, 6, failure_key=key("d"))
    limits(replay_max_runs=5)
    for dry_run in (True, False):
        with Statements(app) as statements:
            async with NothingWritten(app):
                response = await client.post(
                    "/api/v1/org/1/replays", json={"failureKey": key("d"), "dryRun": dry_run}, headers=auth
                )
        assert response.status_code == 400, response.text
        assert response.json()["metadata"]["code"] == "selection_too_large"
        assert "more than the 5 runs" in response.json()["metadata"]["message"]
        counts = statements.counts_of_runs()
        assert counts, "the selection was counted"
        for sql, parameters in counts:
            assert 6 in limits_of(sql, parameters), sql  # at most max_runs + 1 rows are counted

    # At the limit, the dry run answers in full; its counts are bounded all the same.
    limits(replay_max_runs=6)
    with Statements(app) as statements:
        response = await client.post(
            "/api/v1/org/1/replays", json={"failureKey": key("d"), "dryRun": True}, headers=auth
        )
    assert response.status_code == 200, response.text
    assert (response.json()["selected"], response.json()["toReplay"]) == (6, 6)
    counts = statements.counts_of_runs()
    assert len(counts) == 3
    assert all(7 in limits_of(sql, parameters) for sql, parameters in counts)


async def test_a_dry_run_counts_without_holding_the_write_lock(client, auth, app, settings) -> None:  # noqa: ANN001
    """While a dry run counts, another connection can take SQLite's write lock at once: the tenant's dry run
    (any role may make one) no longer makes every other tenant's writes wait for it."""
    database = sqlite_path(settings.resolved_database_url)
    if database is None:
        pytest.skip("PostgreSQL has no database-wide write lock")
    prj = await project(client, auth)
    await failed_runs(app, prj, 3, failure_key=key("e"))
    lock_free: list[bool] = []

    def try_the_write_lock(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "count(" not in statement.lower() or "FROM runs" not in statement:
            return
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            lock_free.append(True)
        except sqlite3.OperationalError:  # database is locked
            lock_free.append(False)
        finally:
            other.close()

    context = app.state.context
    engines = {context.engine.sync_engine, (context.read_engine or context.engine).sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", try_the_write_lock)
    try:
        response = await client.post(
            "/api/v1/org/1/replays", json={"failureKey": key("e"), "dryRun": True}, headers=auth
        )
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", try_the_write_lock)
    assert response.status_code == 200 and response.json()["selected"] == 3, response.text
    assert lock_free == [True, True, True]

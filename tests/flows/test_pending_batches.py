"""Records of pure steps are written in batches of at most PENDING_WRITE_BATCH rows per transaction, so a long
run of pure steps never holds the database's write lock (SQLite has one) long enough to make API calls wait."""

from __future__ import annotations

from typing import Any

import pytest
from flowkit import jira_definition
from sqlalchemy import event

from ihub.flows.engine import PENDING_WRITE_BATCH

pytestmark = pytest.mark.anyio

INNER = 400
OUTER = PENDING_WRITE_BATCH * 2 // INNER + 1
ITEMS = INNER * OUTER
LONG = {
    "key": "long",
    "trigger": "manual",
    "steps": [
        {
            "id": "outer",
            "type": "foreach",
            "items": f"{{{{ range({OUTER}) }}}}",
            "steps": [
                {
                    "id": "inner",
                    "type": "foreach",
                    "items": f"{{{{ range({INNER}) }}}}",
                    "steps": [{"id": "double", "type": "map", "set": {"n": "{{ item * 2 }}"}}],
                }
            ],
        }
    ],
}


async def test_pure_step_records_are_written_in_bounded_batches(kit, app) -> None:  # noqa: ANN001
    per_transaction: list[int] = []
    inserted = {"rows": 0}

    def count_inserts(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUN_STEPS"):
            # executemany: a row per parameter set; else one statement of one or more VALUES groups.
            inserted["rows"] += len(parameters) if many else statement.count("), (") + 1

    def on_commit(conn: Any) -> None:
        if inserted["rows"]:
            per_transaction.append(inserted["rows"])
        inserted["rows"] = 0

    engine = app.state.context.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count_inserts)
    event.listen(engine, "commit", on_commit)
    try:
        project = await kit.project(jira_definition([LONG]))
        run = await kit.wait(await kit.trigger(kit.flow_id(project, "long"), {}), timeout=120)
    finally:
        event.remove(engine, "before_cursor_execute", count_inserts)
        event.remove(engine, "commit", on_commit)
    assert run["status"] == "succeeded", run["error"]
    # Every record was written (the foreach itself and each iteration's step), none in an oversized batch.
    assert sum(per_transaction) >= ITEMS + 1, per_transaction
    assert max(per_transaction) <= PENDING_WRITE_BATCH + 1, per_transaction

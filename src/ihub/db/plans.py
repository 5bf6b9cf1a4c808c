"""The query plans of what a piece of code asks the database: which index each statement reads.

`capture` records the statements an async engine runs (with their parameters); `explain` asks the database for
each one's plan (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL) on a connection of the same engine.
The tests of the runs list assert on these plans (an index per filter: robust where timings are not), and
bench/runs_at_volume.py prints them next to its timings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession


@dataclass
class Captured:
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def reading(self, table: str) -> list[tuple[str, Any]]:
        """The SELECTs that read `table` (not the other lookups the code made on the way)."""
        return [
            (sql, params)
            for sql, params in self.statements
            if sql.lstrip().upper().startswith("SELECT") and f"FROM {table}" in sql
        ]


@contextmanager
def capture(engine: AsyncEngine, *, connection: AsyncConnection | None = None) -> Iterator[Captured]:
    """Record the statements `engine` runs meanwhile; only those on `connection` when given (a running hub's
    background work, such as the queue gauges or the executor's poll, shares the engine)."""
    captured = Captured()
    only = connection.sync_connection if connection is not None else None

    def record(conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if only is None or conn is only:
            captured.statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield captured
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def explain(session: AsyncSession, statement: str, parameters: Any) -> str:
    """The plan of one captured statement, as the database prints it (one line per step)."""
    connection = await session.connection()
    prefix = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
    result = await connection.exec_driver_sql(prefix + statement, parameters)
    rows = result.all()
    if connection.dialect.name == "sqlite":
        return "\n".join(str(row[-1]) for row in rows)
    return "\n".join(str(row[0]) for row in rows)

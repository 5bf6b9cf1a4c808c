"""Every row of every table, to prove what a request wrote (or did not).

Permission tests compare a snapshot taken before a request with one taken after: a refused request (403/404)
must leave the database identical, an allowed one must change the table it is about. Checking the status code
alone lets through a service that writes first and checks the role afterwards (the write is committed, the
caller still gets 403).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.db.registry import metadata

# Failure counters are bookkeeping of the login endpoint, not data a permission check guards.
NOT_GUARDED = frozenset({"rate_limit_counters"})

Snapshot = dict[str, list[tuple[Any, ...]]]


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> Snapshot:
    """Each table's rows, sorted, as plain tuples (comparable across snapshots)."""
    guarded = [table for table in metadata.sorted_tables if table.name not in NOT_GUARDED]
    tables: Snapshot = {table.name: [] for table in guarded}
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            # One round trip instead of one per table: a matrix takes two snapshots per case, and on PostgreSQL
            # the per-table queries (~40 tables) made up most of its time. row_to_json renders every column.
            query = " UNION ALL ".join(
                f"SELECT '{table.name}' AS name, row_to_json(t)::text AS row FROM \"{table.name}\" AS t"
                for table in guarded
            )
            for name, row in (await session.execute(text(query))).all():
                tables[name].append((row,))
        else:
            for table in guarded:
                rows = (await session.execute(select(table))).all()
                tables[table.name] = [tuple(repr(value) for value in row) for row in rows]
    return {name: sorted(rows) for name, rows in tables.items()}


def changed_tables(before: Snapshot, after: Snapshot) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


class NothingWritten:
    """`async with NothingWritten(app): ...` fails if the block changed any row (for refused requests)."""

    def __init__(self, app: Any) -> None:
        self.sessions = app.state.context.sessions

    async def __aenter__(self) -> NothingWritten:
        self.before = await snapshot(self.sessions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            changed = changed_tables(self.before, await snapshot(self.sessions))
            assert not changed, f"a refused request changed {sorted(changed)}"

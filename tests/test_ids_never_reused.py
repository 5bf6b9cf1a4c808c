"""Ids are never handed out twice (migration 0012): SQLite used to give a deleted newest row's id to the next
row, so a stale reference (a client's stored id, an audit target, a per-process cache keyed by id) named the
newcomer, possibly another tenant's. PostgreSQL's sequences never reuse ids; both are checked."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from ihub.db.migrate import upgrade
from ihub.db.registry import metadata

pytestmark = pytest.mark.anyio


async def test_a_deleted_newest_organizations_id_is_not_given_to_the_next(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ids = []
    for name in ("first", "second"):
        response = await client.post("/api/v1/org", json={"name": name, "parentId": "1"}, headers=auth)
        assert response.status_code == 200, response.text
        ids.append(int(response.json()["organizations"][0]["id"]))
        assert (await client.delete(f"/api/v1/org/{ids[-1]}", headers=auth)).status_code == 200
    assert ids[1] > ids[0], ids


def sqlite_tables_without_autoincrement(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            ).all()
    finally:
        engine.dispose()
    with_id = {t.name for t in metadata.sorted_tables if [c.name for c in t.primary_key.columns] == ["id"]}
    return sorted(name for name, sql in rows if name in with_id and "AUTOINCREMENT" not in sql)


def test_every_migrated_sqlite_table_with_an_id_has_autoincrement(tmp_path: Path) -> None:
    """Also catches a later migration that rebuilds a table (Alembic's batch mode) and drops AUTOINCREMENT."""
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    upgrade(url)
    assert sqlite_tables_without_autoincrement(url) == []


def test_the_migration_keeps_every_row_index_trigger_and_reference(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0011")
    engine = create_engine(url)
    stamp = "2026-01-02 03:04:05+00:00"
    try:
        with engine.begin() as connection:
            for org_id, parent, path in ((1, None, "/1/"), (2, 1, "/1/2/"), (3, 2, "/1/2/3/")):
                connection.execute(
                    text(
                        "INSERT INTO organizations (id, name, parent_id, path, created_at) VALUES (:i, :n, :p, :a, :t)"
                    ),
                    {"i": org_id, "n": f"o{org_id}", "p": parent, "a": path, "t": stamp},
                )
            connection.execute(
                text(
                    "INSERT INTO users (id, org_id, name, email, role, created_at) "
                    "VALUES (7, 3, 'u', 'u@example.com', 'Admin', :t)"
                ),
                {"t": stamp},
            )
            before = {
                "indexes": connection.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
                ).all(),
                "triggers": connection.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
                ).all(),
            }
        upgrade(url)
        with engine.begin() as connection:
            assert connection.execute(text("SELECT id, parent_id, path FROM organizations ORDER BY id")).all() == [
                (1, None, "/1/"),
                (2, 1, "/1/2/"),
                (3, 2, "/1/2/3/"),
            ]
            assert connection.execute(text("SELECT id, org_id, email FROM users")).all() == [(7, 3, "u@example.com")]
            assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
            assert (
                connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")).all()
                == before["indexes"]
            )
            assert (
                connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")).all()
                == before["triggers"]
            )
            # The copied rows count: deleting the newest organization does not free its id.
            connection.execute(text("DELETE FROM organizations WHERE id = 3"))
            connection.execute(
                text("INSERT INTO organizations (name, parent_id, path, created_at) VALUES ('n', 2, '/x/', :t)"),
                {"t": stamp},
            )
            assert connection.execute(text("SELECT max(id) FROM organizations")).scalar_one() == 4
    finally:
        engine.dispose()
    assert sqlite_tables_without_autoincrement(url) == []

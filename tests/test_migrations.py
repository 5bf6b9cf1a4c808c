"""The Alembic migration builds exactly the schema the models describe, on SQLite and on PostgreSQL.

While several domains add tables, this fails until the lead regenerates the migration
(`scripts/regenerate-migration`); that is the point: a model change without a migration is a bug.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from ihub.db.engine import sync_url
from ihub.db.migrate import upgrade
from ihub.db.registry import metadata

POSTGRES_ADMIN_URL = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = make_url(POSTGRES_ADMIN_URL)
    name = f"ihub_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_matches_the_models(empty_database):
    upgrade(empty_database)
    engine = create_engine(sync_url(empty_database))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert not differences, "the migration and the models differ; run scripts/regenerate-migration:\n" + "\n".join(
        map(str, differences)
    )
    assert {table.name for table in metadata.sorted_tables} <= tables


def test_upgrade_twice_is_harmless(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert "organizations" in inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_template_versions_migration_backfills_each_template_and_pins_its_projects(empty_database):
    """A database from before versions: each template gets one version (its current definition under its current
    number) and each project is pinned to it, so the first run after the upgrade executes what ran before."""
    upgrade(empty_database, "0001")
    definition = {"connections": [], "flows": [{"key": "f", "trigger": {"type": "manual"}, "steps": []}]}
    engine = create_engine(sync_url(empty_database))
    try:
        with engine.begin() as connection:
            stamp = "2026-01-02 03:04:05+00:00"
            connection.execute(
                text(
                    "INSERT INTO organizations (id, name, parent_id, path, created_at) "
                    "VALUES (1, 'root', NULL, '/1/', :t)"
                ),
                {"t": stamp},
            )
            for template_id, version in ((1, 3), (2, 1)):
                connection.execute(
                    text(
                        "INSERT INTO templates (id, org_id, name, description, definition, version, updated_at, "
                        "created_at) VALUES (:id, 1, :name, '', :definition, :version, :t, :t)"
                    ),
                    {"id": template_id, "name": f"t{template_id}", "definition": json.dumps(definition),
                     "version": version, "t": stamp},
                )  # fmt: skip
            connection.execute(
                text(
                    "INSERT INTO projects (id, org_id, template_id, name, description, settings, updated_at, "
                    "created_at) VALUES (1, 1, 1, 'p', '', '{}', :t, :t)"
                ),
                {"t": stamp},
            )
        upgrade(empty_database)
        with engine.connect() as connection:
            versions = connection.execute(
                text("SELECT template_id, version, definition, created_by FROM template_versions ORDER BY template_id")
            ).all()
            pinned = connection.execute(text("SELECT template_version FROM projects WHERE id = 1")).scalar_one()
    finally:
        engine.dispose()
    decoded = [(t, v, d if isinstance(d, dict) else json.loads(d), by) for t, v, d, by in versions]
    assert decoded == [(1, 3, definition, None), (2, 1, definition, None)]
    assert pinned == 3

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

# Helpers (flowkit, processes) live in test folders, which are not packages: import them by path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "flows"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowkit import Kit  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """An empty PostgreSQL database of its own (processes under test create the schema), dropped afterwards."""
    admin = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    name = f"ihub_proc_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error}")
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

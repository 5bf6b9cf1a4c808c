"""Database files are readable by their owner only (issue 7, item 4): the SQLite file and its -wal and -shm
files are 0600 after `ihub init` and `ihub serve`, like the key file, whatever the umask allows."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ihub.db.files import restrict_database_files, sqlite_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask (files 0644 by default), which the hub must not rely on; the hub inherits it."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def hub_under_umask(permissive_umask: None, request: pytest.FixtureRequest) -> Any:
    """`ihub init` then `ihub serve` (the root conftest's live_hub), started after the umask is set."""
    return request.getfixturevalue("live_hub")


def test_a_started_hub_keeps_its_database_files_private(hub_under_umask: Any) -> None:
    hub = hub_under_umask
    data = Path(hub.env["IHUB_DATA_DIR"])
    # Write through the API so the WAL and shared-memory files exist while the hub runs.
    nonce = uuid.uuid4().hex
    token = httpx.post(
        hub.url + "/api/v1/token",
        json={"userId": hub.user_id, "nonce": nonce, "hash": _hash(hub.secret, nonce)},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    created = httpx.post(
        hub.url + "/api/v1/org",
        json={"name": "files", "parentId": "1"},
        headers={"Authorization": token.json()["tokens"][0]["token"]},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    files = {p.name: mode(p) for p in data.iterdir() if p.name.startswith("ihub.db")}
    # The writer gate (db/write_gate.py) holds no data, but is private too.
    assert files == {"ihub.db": 0o600, "ihub.db-wal": 0o600, "ihub.db-shm": 0o600, "ihub.db-writegate": 0o600}


def test_existing_files_are_tightened(permissive_umask, tmp_path: Path) -> None:
    """A database made before this rule (or copied in with a wider mode) is 0600 after the next start."""
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (x)")
    connection.execute("INSERT INTO t VALUES (1)")
    connection.commit()
    assert mode(path) == 0o644 and mode(Path(f"{path}-wal")) == 0o644
    restrict_database_files(f"sqlite:///{path}")
    assert mode(path) == 0o600 and mode(Path(f"{path}-wal")) == 0o600
    connection.close()


def test_only_sqlite_files_are_touched(tmp_path: Path) -> None:
    assert sqlite_path("postgresql://u@127.0.0.1/db") is None
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path(f"sqlite+aiosqlite:///{tmp_path}/x.db") == tmp_path / "x.db"
    restrict_database_files("sqlite:///:memory:")
    assert list(tmp_path.iterdir()) == []


def _hash(secret: str, nonce: str) -> str:
    import hashlib

    return hashlib.sha256((secret + nonce).encode()).hexdigest()

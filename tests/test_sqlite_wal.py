"""A fresh SQLite database is switched to WAL once, when the engine is made, on one connection that waits for
a lock held elsewhere: its pooled connections no longer race for the switch's exclusive lock (SQLite answers
that race with "database is locked" at once, which CI hit on a fresh test database's first write)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ihub.db.engine import create_engine, ensure_wal


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


@pytest.mark.anyio
async def test_a_fresh_database_is_in_wal_before_any_pooled_connection(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    engine = create_engine(f"sqlite:///{path}", lock_timeout=5)
    try:
        assert journal_mode(path) == "wal"  # before the engine opened a single connection
    finally:
        await engine.dispose()


def test_the_switch_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    assert journal_mode(path) == "delete"
    holder.execute("BEGIN EXCLUSIVE")
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            ensure_wal(path, lock_timeout=30)
        except BaseException as error:  # noqa: BLE001 - the test reports it
            errors.append(error)

    worker = threading.Thread(target=switch)
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive() and not errors  # waiting for the lock, not failed with "database is locked"
    holder.execute("ROLLBACK")
    holder.close()
    worker.join(30)
    assert not worker.is_alive() and errors == []
    assert journal_mode(path) == "wal"

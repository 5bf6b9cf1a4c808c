"""A writer gate for SQLite: processes queue for the write lock on a kernel file lock instead of polling.

SQLite lets one connection write at a time. A connection that finds the lock taken sleeps in SQLite's busy
handler, which polls with growing naps (1, 2, 5, 10 ... 100 ms; sqlite3.c, sqliteDefaultBusyCallback) and
never learns that the lock was freed in between. Inside one process that does not matter (the write pool
has one connection, and contenders queue on the pool), but `ihub serve` runs the API and its flow workers in
separate processes. A worker writing step records in short, frequent transactions then held the lock at
most of the API's polls: the token endpoint's jti insert waited up to a few hundred milliseconds for
transactions of one or two (bench/isolation.py, cpu-foreach: token p99 337 ms against 12 ms quiet).

The gate is an `flock` on a file beside the database, taken before `BEGIN IMMEDIATE` and dropped after the
COMMIT or ROLLBACK. Waiting for it is polled every `GATE_POLL_SECONDS` on the event loop (non-blocking
`flock`, one system call, no I/O), so a waiting writer enters at most that long after the holder leaves, and
the releasing process, busy with the work between its transactions, rarely takes it straight back.

It only orders writers; SQLite's own lock still guarantees correctness. A writer that does not use the gate
(Alembic, a `sqlite3` shell) is waited for by SQLite's busy handler as before, and a process that dies
holding the gate releases it with its file descriptor. A gate not obtained within the lock timeout fails the
transaction like SQLite's busy timeout does ("database is locked", answered 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.util import await_only

from ihub.common.gcpause import pause_collection, resume_collection
from ihub.db.files import OWNER_ONLY

# 1 ms: waking a thousand times a second costs a waiting writer about 1 % of a core in system calls, and
# keeps the hand-over below the time of a single short write transaction (about 1-2 ms here).
GATE_POLL_SECONDS = 0.001

GATE_SUFFIX = "-writegate"


def gate_path(database: Path) -> Path:
    return Path(f"{database}{GATE_SUFFIX}")


class _HeldHere:
    count = 0


_held_here = _HeldHere()


async def until_no_write_held_here() -> None:
    """Wait (yielding) until no write transaction of this process holds the gate.

    A write transaction is several awaits (BEGIN, statements, COMMIT), and at each one the event loop runs
    other tasks before coming back to it. A flow worker's other tasks are runs computing pure steps: one
    expression may compute for up to its 2 s budget, and the lock stayed held that long while the API's
    token endpoint waited (bench/isolation.py cpu-macro: token p99 2 s). The engine calls this before CPU
    work (at every step boundary) so that an open transaction finishes first; I/O is never held up.
    """
    await asyncio.sleep(0)
    # Polled, not an asyncio.Event: the count is per process, and an Event is bound to one event loop.
    while _held_here.count:  # noqa: ASYNC110
        await asyncio.sleep(GATE_POLL_SECONDS)


class WriteGate:
    """One holder per open file description: each write connection opens the gate file for itself."""

    def __init__(self, path: Path, timeout: float) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, OWNER_ONLY)
        self._timeout = timeout
        self.held = False

    def acquire(self) -> None:
        """Take the gate, waiting at most the lock timeout. Called from SQLAlchemy's synchronous `begin`
        event, which the async engine runs in a greenlet on the event loop: the wait is handed back to the
        loop (`await_only`), so other requests go on while this one queues."""
        if not self.held and not self._try():
            await_only(self._wait(time.monotonic() + self._timeout))

    async def _wait(self, deadline: float) -> None:
        while not self._try():
            if time.monotonic() >= deadline:
                # The shape of SQLite's own busy-timeout error, so callers treat both alike (503).
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
            await asyncio.sleep(GATE_POLL_SECONDS)

    def _try(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        _held_here.count += 1
        # A full collection inside the transaction would hold every other process's writes (common/gcpause.py).
        pause_collection()
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            _held_here.count -= 1
            resume_collection()

    def close(self) -> None:
        self.release()
        os.close(self._fd)


GATE_KEY = "ihub_write_gate"


def gate_of(connection_info: dict[str, Any]) -> WriteGate | None:
    gate = connection_info.get(GATE_KEY)
    return gate if isinstance(gate, WriteGate) else None


def release_gate(connection_info: dict[str, Any]) -> None:
    """Drop the gate of a pooled connection if it holds it (a no-op for connections without one)."""
    gate = gate_of(connection_info)
    if gate is not None:
        gate.release()

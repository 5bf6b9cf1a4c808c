"""Engine creation: the async driver for a plain URL, and SQLite tuned for a server."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import NullPool

from ihub.db.files import restrict_database_files, sqlite_path
from ihub.db.write_gate import GATE_KEY, WriteGate, gate_of, gate_path, release_gate

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def async_url(url: str) -> str:
    """`sqlite:///x` → `sqlite+aiosqlite:///x`, `postgresql://` → `postgresql+psycopg://`; explicit drivers kept."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if "+" in parsed.drivername:
        return parsed.render_as_string(hide_password=False)
    if backend not in _ASYNC_DRIVERS and parsed.drivername not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:// or postgresql://")
    return parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername]).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (Alembic, procrastinate's schema tools)."""
    parsed = make_url(async_url(url))
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# A lock wait longer than this answers 503 + Retry-After instead of queueing on (see docs/security.md,
# "Database under load"). Measured with bench/webhook_ingest.py, a healthy hub's slowest write waits well under
# a second at 500 webhooks/s, so 5 s is only reached when something holds the lock (a stuck transaction, an
# `ihub` command in another process); failing fast then frees the client to retry rather than pile up.
DEFAULT_LOCK_TIMEOUT_SECONDS = 5.0

# Read-only connections per process on SQLite. WAL lets any number read beside the one writer; four keep
# GET requests and pollers off the write connection's queue without a thread per request (aiosqlite runs one
# thread per connection, and SQLite reads of these sizes are CPU-bound on the same two cores anyway).
SQLITE_READ_CONNECTIONS = 4


def _sqlite_pragmas(dbapi_connection: Any, lock_timeout: float, *, read_only: bool) -> None:
    # Let SQLAlchemy, not the driver, decide when a transaction starts (see _on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # The busy timeout first: every pragma after it waits for a lock instead of failing at once. WAL is
    # already on (ensure_wal, when the engine was made): asking again is a no-op that takes no lock.
    pragmas = [f"busy_timeout={int(lock_timeout * 1000)}", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"]
    if read_only:
        # A read connection that tried to write would take the write lock behind the pool's back: refuse it.
        pragmas.append("query_only=ON")
    for pragma in pragmas:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def ensure_wal(path: Path, lock_timeout: float) -> None:
    """Switch the database file to WAL once, before any pooled connection opens (the mode is stored in the
    file). Switching takes an exclusive lock, and when several first connections raced for it (a fresh
    database: the writer, the readers and a starting hub's background tasks) SQLite answered "database is
    locked" at once instead of waiting, since waiting could deadlock: seen in CI as an error on a fresh
    database's first write. Done here, on one connection, and retried until the lock timeout (other processes
    of a starting `ihub serve` may be doing the same)."""
    deadline = time.monotonic() + lock_timeout
    delay = 0.005
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=lock_timeout)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if ("locked" not in str(error) and "busy" not in str(error)) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _tune_sqlite(engine: AsyncEngine, lock_timeout: float, *, read_only: bool = False) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, lock_timeout, read_only=read_only)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if read_only:
            # Deferred: takes only a WAL read snapshot, never the write lock, so reads run beside a writer.
            conn.exec_driver_sql("BEGIN")
            return
        gate = gate_of(conn.info)
        if gate is not None:
            gate.acquire()
        try:
            # Take the write lock up front: a deferred transaction that later writes can fail with
            # SQLITE_BUSY without waiting for busy_timeout, which a server must not do.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if gate is not None:
                gate.release()
            raise


def _gate_writers(engine: AsyncEngine, url: str, lock_timeout: float) -> None:
    """Queue this engine's write transactions on the database's writer gate (see ihub.db.write_gate)."""
    path = sqlite_path(url)
    if path is None:
        return  # an in-memory database has one process by definition
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _open_gate(_dbapi_connection: Any, record: Any) -> None:
        record.info[GATE_KEY] = WriteGate(gate_path(path), lock_timeout)

    @event.listens_for(sync_engine, "close")
    def _close_gate(_dbapi_connection: Any, record: Any) -> None:
        gate = gate_of(record.info)
        if gate is not None:
            gate.close()

    # A connection back in the pool, or given up on, has no transaction: its gate must not stay held. A task
    # cancelled inside a transaction reaches none of COMMIT/ROLLBACK below (SQLAlchemy resets or invalidates
    # the connection instead), and a gate left held would refuse every other process's writes with 503.
    for pool_event in ("checkin", "reset", "invalidate", "soft_invalidate", "detach"):
        event.listen(sync_engine.pool, pool_event, _release_record)

    # SQLAlchemy has no event after a COMMIT or ROLLBACK reached the database (its `commit` event fires
    # before), and the gate must stay held until SQLite's lock is gone: wrap this engine's dialect.
    dialect = sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            _release(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            _release(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


def _release_record(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
    if record is not None:
        release_gate(record.info)


def _release(dbapi_connection: Any) -> None:
    try:
        info = dbapi_connection.info
    except (AttributeError, NotImplementedError):
        return  # the dialect's first-connect probe runs on a connection without a pool record
    release_gate(info)


def create_engine(url: str, *, pool: bool = True, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS) -> AsyncEngine:
    """The engine for writes (and for everything, where no read engine is used)."""
    restrict_database_files(url)
    path = sqlite_path(url)
    if path is not None:
        ensure_wal(path, lock_timeout)
    kwargs: dict[str, Any] = {}
    if not pool:
        kwargs["poolclass"] = NullPool
    elif is_sqlite(url):
        # SQLite lets one writer in at a time, and every transaction here takes the write lock. With one
        # pooled connection, contenders inside the process queue on the pool (FIFO, no polling) instead of
        # sleeping in SQLite's busy handler, whose back-off made tail latency spike to seconds under load.
        # Reads go to create_read_engine's connections, so only writers wait here, and at most lock_timeout.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=lock_timeout)
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=lock_timeout)
    if not is_sqlite(url):
        # The same bound as SQLite's busy_timeout: a statement waiting on a row or table lock longer than
        # this fails (LockNotAvailable, answered 503) instead of holding a pooled connection while it waits.
        kwargs["connect_args"] = {"options": f"-c lock_timeout={int(lock_timeout * 1000)}"}
    engine = create_async_engine(async_url(url), **kwargs)
    if is_sqlite(url):
        _tune_sqlite(engine, lock_timeout)
        _gate_writers(engine, url, lock_timeout)
    return engine


def create_read_engine(
    url: str, write_engine: AsyncEngine, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
) -> AsyncEngine:
    """Connections for read-only work. On SQLite, a pool of its own whose transactions are deferred and
    `query_only`, so a reader neither takes nor waits for the write lock (WAL readers see the last commit).
    On PostgreSQL readers never wait for writers anyway: the write engine is returned as is."""
    if not is_sqlite(url):
        return write_engine
    engine = create_async_engine(
        async_url(url), pool_size=SQLITE_READ_CONNECTIONS, max_overflow=0, pool_timeout=lock_timeout
    )
    _tune_sqlite(engine, lock_timeout, read_only=True)

    @event.listens_for(write_engine.sync_engine, "engine_disposed")
    def _dispose_readers(_engine: Any) -> None:
        # Whoever disposes the write engine (serve's shutdown, a CLI command, a worker) closes the readers too:
        # each aiosqlite connection is a non-daemon thread that would otherwise keep the process from exiting.
        engine.sync_engine.dispose()

    return engine


# PostgreSQL's SQLSTATEs for "another transaction was in the way; the same work succeeds if tried again":
# lock_not_available (our lock_timeout ran out), deadlock_detected (PostgreSQL aborted this transaction to break
# a cycle, e.g. a project's cascade delete of its runs against an engine finishing two of them) and
# serialization_failure.
BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


def is_lock_timeout(error: DBAPIError) -> bool:
    """A lock waited on past the timeout (SQLite's busy_timeout, PostgreSQL's lock_timeout), or a transaction
    PostgreSQL aborted to break a deadlock: nothing was stored, and the client should retry after a moment."""
    original = error.orig
    if getattr(original, "sqlstate", None) in BUSY_SQLSTATES:
        return True
    text = str(original).lower()
    return "database is locked" in text or "database table is locked" in text


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def database_of(session: AsyncSession) -> str:
    """The URL of the database a session talks to: the key of per-process caches of database rows (ids are
    only unique within one database; the API's read and write engines share one URL)."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind  # tests may bind a session to a Connection
    return str(engine.url)

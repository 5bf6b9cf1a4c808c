"""Engine creation: the async driver for a plain URL, and SQLite tuned for a server."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import NullPool

from ihub.db.files import restrict_database_files

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


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction starts (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail with
        # SQLITE_BUSY without waiting for busy_timeout, which a server must not do.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, pool: bool = True) -> AsyncEngine:
    restrict_database_files(url)
    kwargs: dict[str, Any] = {}
    if not pool:
        kwargs["poolclass"] = NullPool
    elif is_sqlite(url):
        # SQLite lets one writer in at a time, and every transaction here takes the write lock. With one
        # pooled connection, contenders inside the process queue on the pool (FIFO, no polling) instead of
        # sleeping in SQLite's busy handler, whose back-off made tail latency spike to seconds under load.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=30)
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_async_engine(async_url(url), **kwargs)
    if is_sqlite(url):
        _tune_sqlite(engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)

"""GET /readyz: may this process take traffic? Three checks, each cheap enough for a probe every few seconds.

| check      | passes when                                                   | cost per probe                          |
|------------|---------------------------------------------------------------|-----------------------------------------|
| database   | `SELECT 1` answers within DATABASE_TIMEOUT seconds            | one round trip                          |
| migrations | the database's Alembic revision is the code's head            | none while cached (MIGRATIONS_TTL s)    |
| executor   | runs have somewhere to go: the executor is started and, with  | none (in-memory state)                  |
|            | worker processes, at least one of them is alive               |                                         |

`serve --no-worker` executes nothing by design, so its executor check passes as "not_run_here". A failed check
makes the answer 503 with the failing check's reason; /healthz stays "the process is up" only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ihub.common.context import AppContext
from ihub.db.migrate import alembic_config

DATABASE_TIMEOUT = 2.0
# A deploy migrates before it starts the new code; a hub whose database was moved back meanwhile is caught
# within this many seconds, and a probe every second costs one query per MIGRATIONS_TTL instead of per probe.
MIGRATIONS_TTL = 30.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@lru_cache(maxsize=1)
def code_heads() -> frozenset[str]:
    """The revisions this code's migrations end in (read from the migration files once per process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


async def database_revisions(engine: AsyncEngine) -> frozenset[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return frozenset(str(row[0]) for row in rows)


def migrations_check(found: frozenset[str], heads: frozenset[str]) -> Check:
    if found == heads:
        # Not the revision itself: an unauthenticated probe must not tell a scanner which version runs here.
        return Check(True, "current")
    shown = ", ".join(sorted(found)) or "none"
    return Check(False, f"database at {shown}, code expects {', '.join(sorted(heads))}: run `ihub migrate`")


async def database_check(engine: AsyncEngine, timeout: float = DATABASE_TIMEOUT) -> Check:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(probe(), timeout)
    except TimeoutError:
        return Check(False, f"no answer within {timeout:g} s")
    except Exception as error:  # noqa: BLE001 - any failure means not ready; the class says which, not secrets
        return Check(False, f"unreachable ({type(error).__name__})")
    return Check(True, "reachable")


def executor_check(context: AppContext, runs_here: bool) -> Check:
    if not runs_here:
        return Check(True, "not_run_here")
    supervisor = context.supervisor or context.executor
    pids = getattr(supervisor, "pids", None)
    if isinstance(pids, list):
        count = getattr(supervisor, "count", len(pids))
        if not pids:
            return Check(False, f"none of {count} worker processes is alive")
        return Check(True, f"{len(pids)} of {count} worker processes alive")
    if context.executor is None:
        return Check(False, "the executor is not running")
    return Check(True, "running")


@dataclass
class Readiness:
    """Per app: the cached migration check (its result and when it was taken)."""

    ttl: float = MIGRATIONS_TTL
    _migrations: tuple[float, Check] | None = field(default=None, repr=False)

    def forget(self) -> None:
        self._migrations = None

    async def migrations(self, engine: AsyncEngine) -> Check:
        now = time.monotonic()
        if self._migrations is not None and now - self._migrations[0] < self.ttl:
            return self._migrations[1]
        try:
            found = await asyncio.wait_for(database_revisions(engine), DATABASE_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - reported, and asked again at the next probe
            return Check(False, f"revision unreadable ({type(error).__name__})")
        result = migrations_check(found, code_heads())
        self._migrations = (now, result)
        return result

    async def checks(self, context: AppContext, runs_here: bool) -> dict[str, Check]:
        database = await database_check(context.engine)
        migrations = await self.migrations(context.engine) if database.ok else Check(False, "database unreachable")
        return {"database": database, "migrations": migrations, "executor": executor_check(context, runs_here)}


def report(checks: dict[str, Check]) -> tuple[int, dict[str, Any]]:
    ready = all(check.ok for check in checks.values())
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
    }
    if not ready:
        body["failed"] = [name for name, check in checks.items() if not check.ok]
    return (200 if ready else 503), body

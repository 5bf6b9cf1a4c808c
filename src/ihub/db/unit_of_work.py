"""One unit of work: a session whose writes commit together when the work succeeds and roll back when it
raises. Request handlers (common/context.py `get_session`) and CLI commands (common/cli_support.py
`with_session`) run in one; services only `flush()`.

The exceptions, with their own short transactions, are documented in docs/architecture.md ("Unit of work"):
the flow engine's checkpoints, the webhook's group-committed inserts, the token endpoints' grants and the
failure counters that must survive the error they answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.db.unique import conflict_error

log = logging.getLogger("ihub.db")

# Where `after_commit` and `before_commit` keep their hooks in the session's info dict.
AFTER_COMMIT_KEY = "ihub.after_commit"
BEFORE_COMMIT_KEY = "ihub.before_commit"

AfterCommit = Callable[[], Awaitable[None] | None]
BeforeCommit = Callable[[], Awaitable[None]]


def before_commit(session: AsyncSession, hook: BeforeCommit) -> None:
    """Run `hook` as the last work of this unit of work, inside its transaction, when the block ended without
    error: what it writes commits with the rest, or nothing does (the audit entry of a change, ihub.audit).
    Not run by a commit a service makes itself part-way (the documented exceptions below)."""
    session.info.setdefault(BEFORE_COMMIT_KEY, []).append(hook)


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run `hook` once this unit of work has committed (never when it rolls back): telling an executor about a
    run, or dropping a cache entry, must not happen before what it refers to is visible to other sessions."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(hook)


async def _run_after_commit(session: AsyncSession) -> None:
    hooks: list[AfterCommit] = session.info.pop(AFTER_COMMIT_KEY, [])
    for hook in hooks:
        try:
            result = hook()
            if result is not None:
                await result
        except Exception:  # noqa: BLE001 - the data is committed; a hook is a notification, not part of it
            log.warning("after-commit hook %r failed", hook, exc_info=True)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block ends without error and rolls back when it raises.

    An `IntegrityError` (raised by a flush inside the block or by the commit) becomes the 409 the service
    declared with `db.unique.on_conflict`, or a generic 409: a constraint that decided a race is the client's
    conflict, not a server error. This is the one place where that translation happens.
    """
    async with sessions() as session:
        try:
            yield session
            for hook in session.info.pop(BEFORE_COMMIT_KEY, []):
                await hook()
            await session.commit()
        except IntegrityError:
            await session.rollback()
            session.info.pop(AFTER_COMMIT_KEY, None)
            session.info.pop(BEFORE_COMMIT_KEY, None)
            raise conflict_error(session) from None
        except Exception:
            # (A cancelled task skips this: closing the session below rolls back all the same.)
            await session.rollback()
            session.info.pop(AFTER_COMMIT_KEY, None)
            session.info.pop(BEFORE_COMMIT_KEY, None)
            raise
        await _run_after_commit(session)

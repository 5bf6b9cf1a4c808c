"""Uniqueness checks shared by domains whose names are unique within a scope (an org, a parent org), and
what a constraint violation means to the client.

The check gives a clear 409 before writing; the unique constraint still decides races. A service names the
409 such a race becomes with `on_conflict` before it flushes; the unit of work (db/unit_of_work.py), the one
place that turns an `IntegrityError` into an error, answers with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ihub.common.errors import ApiError, conflict

# Where `on_conflict` keeps (message, code) in the session's info dict, for the rest of the unit of work.
CONFLICT_KEY = "ihub.conflict"

# A violation no service described (a constraint nobody expected to race): still the client's 409, never a 500.
GENERIC_CONFLICT = ("the request conflicts with data stored meanwhile; reload and try again", "conflict")


async def name_taken(
    session: AsyncSession,
    scope: InstrumentedAttribute[Any],
    scope_value: Any,
    name_column: InstrumentedAttribute[str],
    name: str,
    except_id: int | None = None,
) -> bool:
    """Whether another row in the same scope (e.g. `Project.org_id == 7`) already has this name."""
    id_column = scope.class_.id
    query = select(id_column).where(scope == scope_value, name_column == name)
    if except_id is not None:
        query = query.where(id_column != except_id)
    return (await session.scalar(query.limit(1))) is not None


def on_conflict(session: AsyncSession, message: str, code: str = "conflict") -> None:
    """Declare the 409 that a constraint violation from here to the end of the unit of work stands for (the
    latest declaration wins). The violation itself surfaces at a flush or at the commit."""
    session.info[CONFLICT_KEY] = (message, code)


def conflict_error(session: AsyncSession) -> ApiError:
    """The 409 for an `IntegrityError` in this session's unit of work."""
    message, code = session.info.get(CONFLICT_KEY, GENERIC_CONFLICT)
    return conflict(message, code)

"""Uniqueness checks shared by domains whose names are unique within a scope (an org, a parent org).

The check gives a clear 409 before writing; the unique constraint still decides races, which
`commit_or_conflict` turns into the same 409.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ihub.common.errors import conflict


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


async def commit_or_conflict(session: AsyncSession, message: str, code: str = "conflict") -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise conflict(message, code) from None

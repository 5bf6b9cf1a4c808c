"""Reading audit entries straight from the database (what was written, whatever the API shows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ihub.audit.models import AuditEntry


async def entries(app: Any) -> list[AuditEntry]:
    """Every entry, oldest first."""
    async with app.state.context.sessions() as session:
        return list((await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def count(app: Any) -> int:
    return len(await entries(app))

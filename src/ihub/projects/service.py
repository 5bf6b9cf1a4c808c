"""Projects and their connections."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.projects.models import Project


async def count_projects_in_org(session: AsyncSession, org_id: int) -> int:
    return await session.scalar(select(func.count()).select_from(Project).where(Project.org_id == org_id)) or 0

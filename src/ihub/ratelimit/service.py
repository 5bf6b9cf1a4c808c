"""Fixed-window counting of events (such as failed logins) per key, shared through the database."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.ratelimit.models import RateLimitCounter


@dataclass(frozen=True)
class Limit:
    key: str
    max_events: int
    window_seconds: int

    def window_start(self, now: float) -> int:
        return int(now) // self.window_seconds * self.window_seconds


async def retry_after(session: AsyncSession, limits: list[Limit], now: float | None = None) -> int | None:
    """Seconds until the most distant exhausted limit resets, or None while every limit has room."""
    now = time.time() if now is None else now
    waits = []
    for limit in limits:
        start = limit.window_start(now)
        count = await session.scalar(
            select(RateLimitCounter.count).where(
                RateLimitCounter.key == limit.key, RateLimitCounter.window_start == start
            )
        )
        if count is not None and count >= limit.max_events:
            waits.append(max(1, int(start + limit.window_seconds - now + 0.999)))
    return max(waits) if waits else None


async def record(session: AsyncSession, limits: list[Limit], now: float | None = None) -> None:
    """Count one event against each limit (an atomic upsert, so concurrent nodes do not lose counts)."""
    now = time.time() if now is None else now
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for limit in limits:
        start = limit.window_start(now)
        statement = insert(RateLimitCounter).values(key=limit.key, window_start=start, count=1)
        statement = statement.on_conflict_do_update(
            index_elements=["key", "window_start"], set_={"count": RateLimitCounter.count + 1}
        )
        await session.execute(statement)
        # Old windows are dead weight: drop this key's expired ones as we go.
        await session.execute(
            delete(RateLimitCounter).where(RateLimitCounter.key == limit.key, RateLimitCounter.window_start < start)
        )

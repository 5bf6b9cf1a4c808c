"""Fixed-window counting of events (such as failed logins) per key, shared through the database."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select
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


async def _counts(session: AsyncSession, limits: list[Limit], now: float) -> dict[tuple[str, int], int]:
    """The current window's count of every limit, in one query (the token endpoints ask on every request)."""
    counter = RateLimitCounter
    windows = [and_(counter.key == lim.key, counter.window_start == lim.window_start(now)) for lim in limits]
    query = select(counter.key, counter.window_start, counter.count).where(or_(*windows))
    return {(key, start): count for key, start, count in (await session.execute(query)).all()}


def _wait(limit: Limit, counts: dict[tuple[str, int], int], now: float) -> int | None:
    start = limit.window_start(now)
    if counts.get((limit.key, start), 0) < limit.max_events:
        return None
    return max(1, int(start + limit.window_seconds - now + 0.999))


async def retry_after(session: AsyncSession, limits: list[Limit], now: float | None = None) -> int | None:
    """Seconds until the most distant exhausted limit resets, or None while every limit has room."""
    now = time.time() if now is None else now
    counts = await _counts(session, limits, now)
    waits = [wait for limit in limits if (wait := _wait(limit, counts, now)) is not None]
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


@dataclass(frozen=True)
class Assessment:
    """Seconds to wait (None: go ahead), and whether the address has no failure at all in this window: such
    an address is never refused, whatever the other counts say."""

    wait: int | None
    address_clean: bool


class CleanAddresses:
    """Addresses seen without a failure in the current window, remembered for at most `ttl` seconds, so that
    the common case (a well-behaved client) skips the counter read. Forgotten at once when this process counts
    a failure for the address; failures counted by other API nodes are seen within `ttl`, so an attacker
    spreading over nodes gets at most `ttl` seconds of requests per node before the counters apply."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[int, float]] = {}

    def is_clean(self, address: Limit, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        seen = self._seen.get(address.key)
        return seen is not None and seen[0] == address.window_start(now) and time.monotonic() - seen[1] < self.ttl

    def mark_clean(self, address: Limit, now: float | None = None) -> None:
        if len(self._seen) >= self.MAX_ENTRIES:
            self._seen.clear()
        now = time.time() if now is None else now
        self._seen[address.key] = (address.window_start(now), time.monotonic())

    def forget(self, address: Limit) -> None:
        self._seen.pop(address.key, None)


@dataclass(frozen=True)
class FailureLimits:
    """Failed attempts at one credential (a userId, a trigger client), counted so that an attacker cannot turn
    the limit into a lockout of the rightful owner:

    - per (subject, address) pair: guessing from one address is slow;
    - per address: one address guessing many subjects is slow;
    - per subject, from all addresses: a generous ceiling on a distributed attack. Past it, only addresses
      with a failure of their own in the window are refused, so the owner (who has not failed) still gets in,
      and each fresh attacker address gets at most one guess per window.
    """

    pair: Limit
    address: Limit
    subject: Limit

    async def retry_after(self, session: AsyncSession, now: float | None = None) -> int | None:
        return (await self.assess(session, now)).wait

    async def assess(self, session: AsyncSession, now: float | None = None) -> Assessment:
        now = time.time() if now is None else now
        counts = await _counts(session, [self.pair, self.address, self.subject], now)
        clean = counts.get((self.address.key, self.address.window_start(now)), 0) == 0
        waits = [wait for limit in (self.pair, self.address) if (wait := _wait(limit, counts, now)) is not None]
        if waits:
            return Assessment(max(waits), clean)
        subject_wait = _wait(self.subject, counts, now)
        if subject_wait is None or clean:
            return Assessment(None, clean)
        return Assessment(subject_wait, clean)

    async def record(self, session: AsyncSession, now: float | None = None) -> None:
        await record(session, [self.pair, self.address, self.subject], now)


def _key_part(text: str) -> str:
    """Client-chosen text as part of a key: kept when short and printable, else its digest (PostgreSQL text
    cannot hold NUL, and keys must fit the 300-character column)."""
    if len(text) <= 100 and text.isprintable():
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def failure_limits(
    prefix: str, subject: str, address: str, *, per_pair: int, per_address: int, per_subject: int, window: int
) -> FailureLimits:
    subject, address = _key_part(subject), _key_part(address)
    return FailureLimits(
        pair=Limit(f"{prefix}:pair:{subject}:{address}", per_pair, window),
        address=Limit(f"{prefix}:client:{address}", per_address, window),
        subject=Limit(f"{prefix}:subject:{subject}", per_subject, window),
    )

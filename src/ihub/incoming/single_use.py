"""RFC 7523 §3 item 7: an assertion's `jti` is used once, until the assertion expires.

The unique constraint on (client, sha256(jti)) in `incoming_used_jti` is what decides, on every backend and
across API nodes. Grants that arrive together share one write transaction (common/group_commit.py): the
transaction reads which of its jtis are taken, inserts the rest in one statement, and commits. On SQLite
the read and the insert happen under the database's write lock, so nothing can slip in between; on
PostgreSQL another node can, and its insert wins: the batch's unique violation sends every grant of the
batch through a transaction of its own, where the same check answers correctly.

The grant's reads and its signature check happen before, outside any write transaction
(incoming/grant.py): the write lock is held for this insert alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.common.crypto import sha256_hex
from ihub.common.group_commit import GroupCommit
from ihub.db.base import utcnow
from ihub.incoming.models import IdempotencyRecord, UsedAssertion

# A jti is remembered until its assertion's exp plus the clock leeway the grant allows.
PURGE_INTERVAL_SECONDS = 600.0
IDEMPOTENCY_RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Spend:
    client_pk: int
    jti_digest: str
    expires_at: datetime


def spend_of(client_pk: int, jti: str, exp: float, leeway_seconds: float) -> Spend:
    expires = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=leeway_seconds)
    return Spend(client_pk, sha256_hex(jti), expires)


class SingleUse:
    """`spend()` answers True the first time a (client, jti) is presented, False on every later try."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.last_purge = 0.0
        self._group: GroupCommit[Spend, bool] = GroupCommit(self._commit)

    async def spend(self, spend: Spend) -> bool:
        return await self._group.write(spend)

    async def _commit(self, batch: Sequence[Spend]) -> list[bool]:
        now = utcnow()
        pairs = [(item.client_pk, item.jti_digest) for item in batch]
        # Matches the unique index (client_pk, jti_digest); the exact pairs are picked out below.
        these = (
            UsedAssertion.client_pk.in_({pk for pk, _ in pairs}),
            UsedAssertion.jti_digest.in_({digest for _, digest in pairs}),
        )
        async with self.sessions() as session:
            # An expired record no longer blocks its jti (the assertion it came from cannot be used any more).
            await session.execute(delete(UsedAssertion).where(*these, UsedAssertion.expires_at < now))
            found = await session.execute(select(UsedAssertion.client_pk, UsedAssertion.jti_digest).where(*these))
            taken = {(pk, digest) for pk, digest in found.all()}
            answers: list[bool] = []
            rows: list[dict[str, object]] = []
            for item, pair in zip(batch, pairs, strict=True):
                fresh = pair not in taken
                answers.append(fresh)
                if fresh:
                    taken.add(pair)  # the same jti twice in one batch: the second is a replay
                    rows.append(
                        {"client_pk": item.client_pk, "jti_digest": item.jti_digest, "expires_at": item.expires_at}
                    )
            if rows:
                await session.execute(insert(UsedAssertion), rows)
            await self._purge_if_due(session)
            await session.commit()
        return answers

    async def _purge_if_due(self, session: AsyncSession) -> None:
        """Expired jtis and day-old idempotency keys go, at most once per interval per process."""
        if time.monotonic() - self.last_purge < PURGE_INTERVAL_SECONDS:
            return
        self.last_purge = time.monotonic()
        await session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < utcnow()))
        cutoff = utcnow() - IDEMPOTENCY_RETENTION
        await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))

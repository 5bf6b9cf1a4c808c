"""`trigger.key_expiring`: one event per key whose expiry is IHUB_TRIGGER_KEY_EXPIRY_NOTICE_DAYS away or less.

Invariants:
- Once per expiry: a key is claimed by a guarded UPDATE (`expiry_notified_at IS NULL AND expires_at = the value
  read`) in the same transaction as the outbox insert, so with several hub processes checking at once exactly
  one of them emits, and a crash before the commit leaves neither the mark nor the event. Changing a key's
  expiry clears the mark (service.set_key_expiry): the new date gets its own notice.
- A key that was already past its expiry when first checked (registered with a near expiry while no check ran,
  or the hub was down) still gets its one notice, with `expired: true`; revoked keys get none (nobody can use
  them anyway) and neither do keys without an expiry.
- Run by the executors' hourly housekeeping (executors/local.py, procrastinate_executor.py), beside the runs'
  purge; the query reads only keys with an expiry inside the window that were not notified (indexed).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.incoming.flowref import load_flow
from ihub.incoming.models import TriggerClient, TriggerKey

log = logging.getLogger("ihub.incoming")

# Keys claimed per transaction: a backlog (the setting just turned on) never holds the write lock for long.
BATCH = 200


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _due(session: AsyncSession, horizon: datetime) -> list[Any]:
    return list(
        (
            await session.execute(
                select(
                    TriggerKey.id,
                    TriggerKey.kid,
                    TriggerKey.expires_at,
                    TriggerClient.client_id,
                    TriggerClient.flow_id,
                )
                .join(TriggerClient, TriggerClient.id == TriggerKey.client_pk)
                .where(
                    TriggerKey.expires_at.is_not(None),
                    TriggerKey.expires_at <= horizon,
                    TriggerKey.expiry_notified_at.is_(None),
                    TriggerKey.revoked_at.is_(None),
                )
                .order_by(TriggerKey.expires_at, TriggerKey.id)
                .limit(BATCH)
            )
        ).all()
    )


async def _claim(session: AsyncSession, key_id: int, expires_at: datetime, now: datetime) -> bool:
    """Mark the key notified for this expiry, unless another process did, or its expiry changed, meanwhile."""
    result: Any = await session.execute(
        update(TriggerKey)
        .where(
            TriggerKey.id == key_id,
            TriggerKey.expiry_notified_at.is_(None),
            TriggerKey.expires_at == expires_at,
        )
        .values(expiry_notified_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)


async def _emit(session: AsyncSession, row: Any, now: datetime) -> None:
    loaded = await load_flow(session, row.flow_id)
    if loaded is None:
        return
    data = {
        "orgId": str(loaded.org_id),
        "projectId": str(loaded.project_id),
        "flowId": str(loaded.flow.id),
        "flowKey": loaded.flow.key,
        "clientId": row.client_id,
        "kid": row.kid,
        "expiresAt": _iso(row.expires_at),
        "expired": row.expires_at <= now,
    }
    await outbox.emit(session, EventType.TRIGGER_KEY_EXPIRING, loaded.org_path, data)


async def notify_expiring_keys(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime | None = None
) -> int:
    """Emit `trigger.key_expiring` for every key now inside the notice window and not notified; returns how many
    keys were claimed. Safe to run in several processes at once (see the module's invariants)."""
    days = settings.trigger_key_expiry_notice_days
    if days <= 0:
        return 0
    now = now or utcnow()
    horizon = now + timedelta(days=days)
    total = 0
    while True:
        async with sessions() as session:
            rows = await _due(session, horizon)
            claimed = 0
            for row in rows:
                if await _claim(session, row.id, row.expires_at, now):
                    await _emit(session, row, now)
                    claimed += 1
            await session.commit()
        total += claimed
        # A full batch of keys another process claimed first means that process is working through them.
        if len(rows) < BATCH or claimed == 0:
            break
    if total:
        log.info("trigger.key_expiring emitted for %d keys", total)
    return total

"""Reading the audit log (Owners, their organization's subtree) and purging it past its retention."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.audit.models import AuditEntry
from ihub.audit.recorder import Change, recorder_of
from ihub.common.errors import not_found
from ihub.db.base import utcnow
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal, require_owner

if TYPE_CHECKING:
    from ihub.common.context import AppContext

log = logging.getLogger("ihub.audit")

# Entries one export streams at most; narrower filters (since/until) export the rest.
EXPORT_MAX = 100_000
# Rows fetched per round trip while exporting.
EXPORT_BATCH = 500
# Entries deleted per statement by the purge, so a long backlog never holds the write lock for long.
PURGE_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    """What a list or an export is narrowed to; None means any."""

    actor_user_id: int | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    org_id: int | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def readable_path(session: AsyncSession, principal: Principal, org_id: int | None) -> str:
    """The organization path whose subtree the Owner `principal` reads: their own, or `org_id`'s when they see
    it (404 otherwise, as for any object of another tenant). Admins and Members: 403."""
    require_owner(principal, "read the audit log")
    if org_id is None:
        return principal.org_path
    path = await session.scalar(select(Organization.path).where(Organization.id == org_id))
    if path is None or not principal.sees(path):
        raise not_found("organization", org_id)
    return path


def _query(path: str, filters: AuditFilter) -> Select[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.org_path.startswith(path, autoescape=True))
    if filters.actor_user_id is not None:
        query = query.where(AuditEntry.actor_user_id == filters.actor_user_id)
    if filters.action is not None:
        query = query.where(AuditEntry.action == filters.action)
    if filters.target_type is not None:
        query = query.where(AuditEntry.target_type == filters.target_type)
    if filters.target_id is not None:
        query = query.where(AuditEntry.target_id == filters.target_id)
    if filters.channel is not None:
        query = query.where(AuditEntry.channel == filters.channel)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    return query.order_by(AuditEntry.id.desc())


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    filters: AuditFilter,
    *,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[AuditEntry], int | None]:
    """One page, newest first (keyset on id): `before` is the previous page's cursor. Returns the entries and
    the cursor of the next (older) page, None on the last one."""
    path = await readable_path(session, principal, filters.org_id)
    return await page(session, path, filters, limit=limit, before=before)


async def org_path(session: AsyncSession, org_id: int | None) -> str:
    """The subtree the shell reads: everything, or one organization's (for `ihub audit --org`)."""
    if org_id is None:
        return "/"
    path = await session.scalar(select(Organization.path).where(Organization.id == org_id))
    if path is None:
        raise not_found("organization", org_id)
    return path


async def page(
    session: AsyncSession, path: str, filters: AuditFilter, *, limit: int = 50, before: int | None = None
) -> tuple[list[AuditEntry], int | None]:
    query = _query(path, filters)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    entries = list((await session.scalars(query.limit(limit + 1))).all())
    more = len(entries) > limit
    entries = entries[:limit]
    return entries, (entries[-1].id if more and entries else None)


async def export_entries(
    session: AsyncSession, path: str, filters: AuditFilter, *, limit: int = EXPORT_MAX
) -> AsyncIterator[AuditEntry]:
    """Every entry matching, newest first, fetched in batches (for a streamed export). `path` comes from
    `readable_path`, called before the response starts so that a refusal is still an error status."""
    sent = 0
    before: int | None = None
    while sent < limit:
        query = _query(path, filters)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        batch = list((await session.scalars(query.limit(min(EXPORT_BATCH, limit - sent)))).all())
        for entry in batch:
            yield entry
        sent += len(batch)
        if len(batch) < EXPORT_BATCH:
            return
        before = batch[-1].id


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API, the export and `ihub audit list --json` show it (ids as decimal strings)."""
    return {
        "id": str(entry.id),
        "at": entry.at.isoformat(),
        "channel": entry.channel,
        "actor": {
            "userId": str(entry.actor_user_id) if entry.actor_user_id is not None else None,
            "name": entry.actor_name,
            "address": entry.address,
            "userAgent": entry.user_agent,
        },
        "orgId": str(entry.org_id) if entry.org_id is not None else None,
        "action": entry.action,
        "target": {"type": entry.target_type, "id": entry.target_id} if entry.target_type else None,
        "changes": entry.changes,
    }


async def purge_entries(session: AsyncSession, *, older_than_days: int) -> int:
    """Delete entries older than the retention, oldest first, in batches; returns how many. The only deletion
    the audit log knows: nothing updates an entry, and nothing else deletes one."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    total = 0
    while True:
        ids = list(
            (
                await session.scalars(
                    select(AuditEntry.id).where(AuditEntry.at < cutoff).order_by(AuditEntry.id).limit(PURGE_BATCH)
                )
            ).all()
        )
        if not ids:
            break
        await session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
        total += len(ids)
    # A purge a person runs (`ihub audit purge`, whose days may be fewer than the retention) is itself an entry:
    # who removed how much history stays on record. The hourly pass has no recorder and leaves none.
    recorder = recorder_of(session)
    if recorder is not None and total:
        summary = {"entries": total, "olderThanDays": older_than_days}
        recorder.note(Change("audit_entries", None, "purge", summary, None))
    return total


async def purge_audit_log(context: AppContext) -> int:
    """The hourly retention pass (beside the runs' purge, in whichever executor runs housekeeping)."""
    days = context.settings.audit_retention_days
    async with context.sessions() as session:
        purged = await purge_entries(session, older_than_days=days)
        await session.commit()
    if purged:
        log.info("purged %d audit log entries older than %d days", purged, days)
    return purged

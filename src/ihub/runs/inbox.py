"""The failure inbox: an organization's subtree's failure groups (ihub.runs.failures), newest failure first.

A group is what `failure_groups` holds per organization, summed over the organizations of the caller's
subtree: its count, first and last seen, and the organizations affected are those of the subtree only. The
same template used by two sibling organizations makes one group key in both; neither sibling's inbox counts
or names the other's failures (the rows are read by org id, and the ids are the subtree's).

What a count means: every failure since the group was first seen in that organization. Retention
(`purge_runs`) deletes old runs but leaves the counts (they are history, as first seen is); the group's runs
list shows the runs still kept. A replayed run stays counted: the replay is a new run, and the inbox is where
a failure is seen, not a to-do list.

Pages are keyset pages on (last seen, key), newest first. Reading one sums the subtree's rows: one small row
per (organization, group), not one per run, so a page costs the subtree's group rows, never its runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.db.base import UTCDateTime
from ihub.runs.models import FailureGroup
from ihub.runs.service import RunFilter, RunPage, page_runs
from ihub.templates.models import Template
from ihub.tenancy.models import Organization

# A key is 32 lowercase hex digits (ihub.runs.failures.Failure.key).
KEY_LENGTH = 32


@dataclass(frozen=True)
class InboxFilter:
    """What the inbox is narrowed to; None means any."""

    flow_key: str | None = None
    template_id: int | None = None
    # Groups whose last failure (in the subtree) is at or after this time.
    since: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after the group last seen at `last_seen` with key `key`."""

    last_seen: datetime
    key: str

    def encode(self) -> str:
        return f"{self.last_seen.astimezone(UTC).isoformat()}~{self.key}"

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """None when `text` is not a cursor this module made."""
        moment, _, key = text.partition("~")
        if len(key) != KEY_LENGTH or not is_key(key):
            return None
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        try:
            return cls(parsed.astimezone(UTC), key)
        except OverflowError:  # `0001-01-01T00:00:00+23:59`: parses, but is before the calendar's start in UTC
            return None


def is_key(text: str) -> bool:
    return len(text) == KEY_LENGTH and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class OrgCount:
    org_id: int
    name: str
    count: int


@dataclass
class Group:
    key: str
    template_id: int
    template_name: str | None
    flow_key: str
    step: str
    signature: str
    # The subtree's latest occurrence's error (redacted as the run shows it).
    sample_error: str
    count: int
    first_seen: datetime
    last_seen: datetime
    # The most affected organizations of the subtree (at most ORGS_LISTED), most failures first.
    orgs: list[OrgCount] = field(default_factory=list)
    # How many organizations of the subtree are affected in all.
    org_count: int = 0


@dataclass(frozen=True)
class GroupPage:
    groups: list[Group]
    next_cursor: Cursor | None


def _subtree_orgs(org_path: str) -> Select[int]:
    return select(Organization.id).where(Organization.path.startswith(org_path, autoescape=True))


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for aggregates: they are UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def groups(
    session: AsyncSession, org_path: str, filters: InboxFilter, *, limit: int = 50, cursor: Cursor | None = None
) -> GroupPage:
    """The subtree's failure groups, last seen first (ties by key), `limit` per page."""
    in_subtree = FailureGroup.org_id.in_(_subtree_orgs(org_path).scalar_subquery())
    conditions: list[ColumnElement[bool]] = [in_subtree]
    if filters.flow_key:
        conditions.append(FailureGroup.flow_key == filters.flow_key)
    if filters.template_id is not None:
        conditions.append(FailureGroup.template_id == filters.template_id)
    last_seen = func.max(FailureGroup.last_seen, type_=UTCDateTime())
    having: list[ColumnElement[bool]] = []
    if filters.since is not None:
        # On the group's last failure in the subtree: an organization that failed long ago still counts.
        having.append(last_seen >= filters.since)
    if cursor is not None:
        tie = and_(last_seen == cursor.last_seen, FailureGroup.failure_key < cursor.key)
        having.append(or_(last_seen < cursor.last_seen, tie))
    query = (
        select(
            FailureGroup.failure_key,
            func.sum(FailureGroup.count),
            func.min(FailureGroup.first_seen, type_=UTCDateTime()),
            last_seen,
            func.count(),
        )
        .where(*conditions)
        .group_by(FailureGroup.failure_key)
        .having(and_(*having) if having else and_(True))
        .order_by(last_seen.desc(), FailureGroup.failure_key.desc())
        .limit(limit + 1)
    )
    summed = list((await session.execute(query)).all())
    more = len(summed) > limit
    summed = summed[:limit]
    if not summed:
        return GroupPage([], None)
    by_key = await _details(session, [row[0] for row in summed], conditions)
    page: list[Group] = []
    for key, count, first_seen, latest, org_count in summed:
        group = by_key[key]
        group.count, group.first_seen, group.last_seen = int(count), _aware(first_seen), _aware(latest)
        group.org_count = int(org_count)
        page.append(group)
    next_cursor = Cursor(page[-1].last_seen, page[-1].key) if more else None
    return GroupPage(page, next_cursor)


# Organizations listed per group: the most affected ones (a vendor's root may see a group in hundreds);
# `org_count` tells how many there are in all.
ORGS_LISTED = 10


async def _details(session: AsyncSession, keys: list[str], conditions: list[ColumnElement[bool]]) -> dict[str, Group]:
    """The groups' descriptions, latest sample and most affected organizations (with their names), from the
    subtree's rows. The rows are ranked in the database on their small columns only; the texts, the
    organizations' and templates' names are read for the rows shown (at most ORGS_LISTED + 1 per group)."""
    by_count = func.row_number().over(
        partition_by=FailureGroup.failure_key, order_by=(FailureGroup.count.desc(), FailureGroup.org_id)
    )
    by_time = func.row_number().over(
        partition_by=FailureGroup.failure_key, order_by=(FailureGroup.last_seen.desc(), FailureGroup.id.desc())
    )
    ranked = (
        select(FailureGroup.id, by_count.label("by_count"), by_time.label("by_time"))
        .where(FailureGroup.failure_key.in_(keys), *conditions)
        .subquery()
    )
    rows = (
        await session.execute(
            select(
                FailureGroup.failure_key,
                FailureGroup.org_id,
                Organization.name,
                # Not `count`: a Row has a count() method.
                FailureGroup.count.label("failures"),
                FailureGroup.template_id,
                Template.name.label("template_name"),
                FailureGroup.flow_key,
                FailureGroup.step,
                FailureGroup.signature,
                FailureGroup.sample_error,
                ranked.c.by_count,
                ranked.c.by_time,
            )
            .join(FailureGroup, FailureGroup.id == ranked.c.id)
            .join(Organization, Organization.id == FailureGroup.org_id)
            .outerjoin(Template, Template.id == FailureGroup.template_id)
            .where(or_(ranked.c.by_count <= ORGS_LISTED, ranked.c.by_time == 1))
            .order_by(FailureGroup.failure_key, ranked.c.by_count)
        )
    ).all()
    found: dict[str, Group] = {}
    for row in rows:
        group = found.get(row.failure_key)
        if group is None:
            group = found[row.failure_key] = Group(
                key=row.failure_key,
                template_id=row.template_id,
                template_name=row.template_name,
                flow_key=row.flow_key,
                step=row.step,
                signature=row.signature,
                sample_error=row.sample_error,
                count=0,
                first_seen=datetime.min.replace(tzinfo=UTC),
                last_seen=datetime.min.replace(tzinfo=UTC),
            )
        if row.by_time == 1:  # the latest occurrence in the subtree: its error is the group's sample
            group.sample_error = row.sample_error
        if row.by_count <= ORGS_LISTED:
            group.orgs.append(OrgCount(row.org_id, row.name, row.failures))
    return found


async def group_in_subtree(session: AsyncSession, org_path: str, key: str) -> bool:
    """Whether the subtree has the group (else its runs are a 404, as another tenant's group is)."""
    query = select(FailureGroup.id).where(
        FailureGroup.failure_key == key, FailureGroup.org_id.in_(_subtree_orgs(org_path).scalar_subquery())
    )
    return await session.scalar(query.limit(1)) is not None


async def group_runs(
    session: AsyncSession,
    org_path: str,
    key: str,
    *,
    limit: int = 50,
    before: int | None = None,
    after: int | None = None,
) -> RunPage:
    """The subtree's runs of one group, newest first (keyset on the id, as every runs list)."""
    filters = RunFilter(failure_key=key)
    return await page_runs(session, filters, org_path=org_path, limit=limit, before=before, after=after)
